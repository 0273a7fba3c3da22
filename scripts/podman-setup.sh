#!/usr/bin/env bash
# Configure podman (as root) so that `podman build` and `podman run` work on
# machines without systemd as PID 1 and with low hard rlimits:
#
#   /etc/containers/containers.conf.d/50-sentinel.conf
#     runtime="runc"           the only OCI runtime install-system-deps.sh installs
#     cgroup_manager="cgroupfs" no systemd to ask for scopes
#     events_logger="file"     no journald
#     default_ulimits          podman's default asks for nofile=1048576, and runc
#                              fails with "error setting rlimit type 7: operation
#                              not permitted" where the hard limit is lower (root
#                              without CAP_SYS_RESOURCE can't raise it); we use
#                              this machine's hard limits (ulimit -Hn/-Hu), the
#                              process limit capped at kernel.pid_max: above it
#                              runc 1.1 fails with "rlimit type 6" here
#   /etc/containers/storage.conf
#     driver                   the driver of an existing store, else "overlay"
#                              if a test mount of kernel overlayfs works on the
#                              graph root's filesystem, else "vfs" (slow, but
#                              works everywhere)
#
# Idempotent: files are rewritten only when their content would change.
set -euo pipefail

conf_dir=/etc/containers
graphroot=/var/lib/containers/storage
runroot=/run/containers/storage

if [[ "$(id -u)" -ne 0 ]]; then
    echo "podman-setup: must run as root (it writes $conf_dir); run: sudo bash $0" >&2
    exit 1
fi

changed=0
# write_if_changed PATH: write stdin to PATH unless PATH already holds exactly that.
write_if_changed() {
    local path="$1" tmp
    tmp="$(mktemp "${path}.XXXXXX")"
    cat >"$tmp"
    if [[ -f "$path" ]] && cmp -s "$tmp" "$path"; then
        rm -f "$tmp"
        return
    fi
    chmod 644 "$tmp"
    mv -f "$tmp" "$path"
    echo "podman-setup: wrote $path" >&2
    changed=1
}

# A hard limit, capped where the shell says "unlimited".
hard_limit() {
    local value
    value="$(ulimit -H "$1")"
    if [[ "$value" == unlimited ]]; then
        echo "$2"
    else
        echo "$value"
    fi
}

nofile="$(hard_limit -n "$(cat /proc/sys/fs/nr_open)")"
nproc="$(hard_limit -u 4194304)"
pid_max="$(cat /proc/sys/kernel/pid_max)"
((nproc <= pid_max)) || nproc="$pid_max"

mkdir -p "$conf_dir/containers.conf.d"
write_if_changed "$conf_dir/containers.conf.d/50-sentinel.conf" <<EOF
# Written by Sentinel's scripts/podman-setup.sh; rerun it rather than editing.
[containers]
# This machine's hard limits (nproc capped at kernel.pid_max): podman's own
# default (nofile=1048576) makes runc fail with "error setting rlimit" wherever
# the hard limit is lower.
default_ulimits = [
  "nofile=${nofile}:${nofile}",
  "nproc=${nproc}:${nproc}",
]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF

# Storage driver: keep the driver of an existing store (switching would make
# podman refuse to start: "database graph driver ... does not match"); else
# probe kernel overlayfs where the store will live.
driver=""
if [[ -d "$graphroot/overlay-images" ]]; then
    driver=overlay
elif [[ -d "$graphroot/vfs-images" ]]; then
    driver=vfs
else
    mkdir -p "$graphroot"
    probe="$(mktemp -d "$graphroot/../overlay-probe.XXXXXX")"
    mkdir -p "$probe"/{lower,upper,work,merged}
    if mount -t overlay overlay -o "lowerdir=$probe/lower,upperdir=$probe/upper,workdir=$probe/work" "$probe/merged" 2>/dev/null; then
        umount "$probe/merged"
        driver=overlay
    else
        driver=vfs
    fi
    rm -rf "$probe"
fi

write_if_changed "$conf_dir/storage.conf" <<EOF
# Written by Sentinel's scripts/podman-setup.sh; rerun it rather than editing.
[storage]
driver = "${driver}"
runroot = "${runroot}"
graphroot = "${graphroot}"
EOF

if ((changed)); then
    echo "podman-setup: runtime=runc cgroup_manager=cgroupfs storage=${driver} nofile=${nofile} nproc=${nproc}" >&2
fi
