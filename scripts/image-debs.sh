#!/usr/bin/env bash
# Put the .deb files of the image's runtime libraries for --probe ebpf into DIR
# (dist/wheelhouse/debs), so that docker/Dockerfile installs them with dpkg -i and its
# build still needs no network (make image, tests/integration/test_image.py):
#
#   bash scripts/image-debs.sh dist/wheelhouse/debs
#
# The packages: libbpf1 (libbpf.so.1, the loader sentinel/probes/libbpf.py binds) and
# its libelf1 (libelf.so.1); their other dependencies, libc6 and zlib1g, are in every
# Debian base. They come from dist/debs (this script's cache, filled once), else from
# this machine's apt: `apt-get download`, its candidate versions, for its architecture.
# That apt must be BASE's Debian release (bookworm for the default BASE and for
# localhost/sentinel-base:bookworm), as dpkg -i does not resolve anything.
# Without apt-get, or offline, DIR is left without them (one line says so) and the
# Dockerfile runs `apt-get install libbpf1` itself, which needs the network.
set -euo pipefail

if [[ $# -ne 1 || "$1" == -* ]]; then
    echo "image-debs: usage: bash scripts/image-debs.sh DIR (e.g. dist/wheelhouse/debs)" >&2
    exit 2
fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$1"
cache="$root/dist/debs"
packages=(libbpf1 libelf1)

mkdir -p "$out" "$cache"
# Two builds in one tree (a test session and `make image`) fill the cache once.
exec 9>"$cache/.lock"
flock 9

missing=()
for pkg in "${packages[@]}"; do
    compgen -G "$cache/${pkg}_*.deb" >/dev/null || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if ! command -v apt-get >/dev/null; then
        echo "image-debs: no apt-get here to download ${missing[*]}: the image build will run apt-get install libbpf1 (it needs the network)" >&2
        exit 0
    fi
    # APT::Sandbox::User=root: apt's _apt user may not write into a root-owned tree.
    if ! (cd "$cache" && apt-get -q -o APT::Sandbox::User=root download "${missing[@]}" >/dev/null); then
        echo "image-debs: apt-get download ${missing[*]} failed: the image build will run apt-get install libbpf1 (it needs the network)" >&2
        exit 0
    fi
fi
for pkg in "${packages[@]}"; do
    # The newest one if the cache holds several (an apt upgrade since).
    deb="$(compgen -G "$cache/${pkg}_*.deb" | sort -V | tail -n 1)"
    cp "$deb" "$out/"
done
