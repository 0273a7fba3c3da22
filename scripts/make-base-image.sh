#!/usr/bin/env bash
# Build localhost/sentinel-base:bookworm, a minimal Debian bookworm root
# filesystem with python3, without any container registry: debootstrap from
# the Debian mirror this machine's apt already uses, then `podman import`.
# docker/Dockerfile builds on it in the tests (--build-arg BASE=...).
#
#   bash scripts/make-base-image.sh            # skip if the image exists
#   bash scripts/make-base-image.sh --rebuild  # build it again
#
# Mirror: $SENTINEL_DEBIAN_MIRROR, else the first apt source (deb822
# /etc/apt/sources.list.d/*.sources, or one-line *.list and
# /etc/apt/sources.list) whose suites include "bookworm".
# Downloaded .debs are kept in /var/cache/sentinel-debootstrap, so a rebuild
# on the same machine downloads nothing.
set -euo pipefail

image=localhost/sentinel-base:bookworm
suite=bookworm
cache_dir=/var/cache/sentinel-debootstrap

rebuild=0
for arg in "$@"; do
    case "$arg" in
        --rebuild) rebuild=1 ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "make-base-image: unknown argument '$arg'; use --rebuild or --help" >&2; exit 2 ;;
    esac
done

if [[ "$(id -u)" -ne 0 ]]; then
    echo "make-base-image: must run as root (debootstrap creates device nodes and chroots); run: sudo bash $0" >&2
    exit 1
fi
for cmd in debootstrap podman; do
    if ! command -v "$cmd" >/dev/null; then
        echo "make-base-image: '$cmd' not found; run scripts/install-system-deps.sh first" >&2
        exit 1
    fi
done

# Two test sessions may ask at once: one builds, the other waits and then skips.
mkdir -p "$cache_dir"
exec 9>"$cache_dir/.lock"
flock 9

if ((!rebuild)) && podman image exists "$image"; then
    echo "make-base-image: $image exists; pass --rebuild to build it again" >&2
    exit 0
fi

find_mirror() {
    local f
    shopt -s nullglob
    for f in /etc/apt/sources.list.d/*.sources; do
        # deb822 stanzas, blank-line separated: print the first URI of a
        # "Types: deb" stanza whose Suites hold the plain suite name.
        awk -v suite="$suite" '
            function flush() {
                if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && enabled != "no" && uri != "") { print uri; found = 1; exit }
                types = ""; suites = ""; uri = ""; enabled = ""
            }
            /^[[:space:]]*$/ { flush(); next }
            /^#/ { next }
            tolower($1) == "types:"   { $1 = ""; types = $0 }
            tolower($1) == "suites:"  { $1 = ""; suites = $0 }
            tolower($1) == "uris:"    { uri = $2 }
            tolower($1) == "enabled:" { enabled = tolower($2) }
            END { if (!found) flush() }
        ' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f "$f" ]] || continue
        # deb [options] URI suite component...
        awk -v suite="$suite" '
            $1 != "deb" { next }
            { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ } }
            $(i + 1) == suite { print $i; exit }
        ' "$f"
    done
}

mirror="${SENTINEL_DEBIAN_MIRROR:-}"
if [[ -z "$mirror" ]]; then
    mirror="$(find_mirror | head -n 1)"
fi
if [[ -z "$mirror" ]]; then
    echo "make-base-image: no apt source for '$suite' found in /etc/apt; set SENTINEL_DEBIAN_MIRROR to a Debian mirror URL" >&2
    exit 1
fi

rootfs="$(mktemp -d /var/tmp/sentinel-base.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT

echo "make-base-image: debootstrap $suite from $mirror" >&2
start=$SECONDS
# minbase: Priority "required" packages plus apt; python3 brings the
# interpreter and its standard library (no pip, no venv module's ensurepip:
# the Dockerfile installs wheels with a pip wheel from the wheelhouse).
if ! debootstrap --variant=minbase --include=python3 --components=main \
        --cache-dir="$cache_dir" "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1; then
    tail -n 20 "$rootfs.log" >&2
    echo "make-base-image: debootstrap failed (full log: $rootfs.log); check the mirror $mirror is reachable" >&2
    exit 1
fi
rm -f "$rootfs.log"

# Drop what a container never reads: docs, man pages, translations, apt's
# package lists and caches, logs. Keeps the image (and every derived one) small.
rm -rf "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
       "$rootfs"/usr/share/locale/* "$rootfs"/usr/share/lintian \
       "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
       "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/lib/dpkg/*-old \
       "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/*
find "$rootfs"/usr/lib/python3* -name __pycache__ -prune -exec rm -rf {} +
# Keep dpkg from putting those files back in derived images' apt-get installs.
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/01-sentinel-nodoc" <<'EOF'
path-exclude=/usr/share/doc/*
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
EOF

old_id="$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)"
tar -C "$rootfs" --numeric-owner -c . | podman import --quiet \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    --message "debootstrap --variant=minbase --include=python3 $suite" \
    - "$image" >/dev/null

# --rebuild: drop the image the tag moved away from, unless something uses it.
if [[ -n "$old_id" && "$old_id" != "$(podman image inspect --format '{{.Id}}' "$image")" ]]; then
    podman rmi "$old_id" >/dev/null 2>&1 || true
fi

echo "make-base-image: built $image in $((SECONDS - start)) s ($(podman image inspect --format '{{.Size}}' "$image") bytes)" >&2
