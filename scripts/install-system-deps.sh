#!/usr/bin/env bash
# Install the Debian packages that Sentinel's test-suite and demo need, then
# configure podman (scripts/podman-setup.sh).
#
#   prometheus, promtool   prometheus      (rules and scrape tests)
#   nc -U                  netcat-openbsd  (control-socket tests)
#   tmux                   tmux            (dashboard tests)
#   podman, runc           podman runc     (container image test)
#   debootstrap            debootstrap     (local base image, no registry)
#   qemu-system-x86_64     qemu-system-x86 (a cgroup v2 guest: scripts/cgroup2-vm.py)
#   /boot/vmlinuz-*-amd64  linux-image-amd64 (the guest's kernel)
#   cpio                   cpio            (the guest's initramfs)
#   clang, bpf_helpers.h   clang libbpf-dev (make bpf: the eBPF probe's object)
#   libbpf.so.1            libbpf1         (--probe ebpf loads the object through it)
#
# Idempotent and fast when done: one dpkg-query, no `apt-get update`, when
# every package is already installed. Non-interactive; run as root on Debian
# bookworm. Services are never started: a packaged Prometheus listening on
# :9090 would collide with the tests' own servers.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

packages=(
    prometheus          # prometheus + promtool
    netcat-openbsd      # nc -U (the traditional netcat has no -U)
    tmux
    podman
    runc                # podman-setup.sh pins runtime="runc"
    conmon
    containernetworking-plugins
    iptables            # netavark's bridge networks, e.g. `podman build` steps
    fuse-overlayfs      # storage fallback where kernel overlay is refused
    uidmap              # newuidmap/newgidmap, for podman run by a non-root user
    slirp4netns
    debootstrap         # scripts/make-base-image.sh
    debian-archive-keyring
    qemu-system-x86     # scripts/cgroup2-vm.py: a cgroup v2 guest (TCG; KVM does not boot here)
    linux-image-amd64   # the guest's kernel under /boot
    cpio                # packs the guest's initramfs
    clang               # make bpf: compiles sentinel/probes/bpf/sentinel.bpf.c (BPF target)
    libbpf-dev          # its bpf/bpf_helpers.h
    libbpf1             # --probe ebpf: libbpf.so.1, the loader's library
)

missing=()
for pkg in "${packages[@]}"; do
    status="$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)"
    [[ "$status" == installed ]] || missing+=("$pkg")
done

if ((${#missing[@]})); then
    if [[ "$(id -u)" -ne 0 ]]; then
        echo "install-system-deps: missing Debian packages: ${missing[*]}; run this script as root (apt-get needs it)" >&2
        exit 1
    fi
    if ! command -v apt-get >/dev/null; then
        echo "install-system-deps: missing packages ${missing[*]} and no apt-get: this script supports Debian/Ubuntu only; install them by hand" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive

    # Keep maintainer scripts from starting services (prometheus ships an
    # init script and a systemd unit). 101 = "action forbidden by policy".
    # Leave an existing policy alone: Docker's images ship one that says 101.
    policy=/usr/sbin/policy-rc.d
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\n# written by sentinel install-system-deps.sh for the length of one apt-get run\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        trap 'rm -f "$policy"' EXIT
    fi

    echo "install-system-deps: installing ${missing[*]}" >&2
    apt_opts=(-o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    apt-get "${apt_opts[@]}" update -qq
    apt-get "${apt_opts[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

for cmd in prometheus promtool nc tmux podman runc debootstrap qemu-system-x86_64 cpio; do
    if ! command -v "$cmd" >/dev/null; then
        echo "install-system-deps: '$cmd' is still not on PATH after installing its package; check PATH includes /usr/sbin and /usr/bin" >&2
        exit 1
    fi
done

bash "$here/podman-setup.sh"
