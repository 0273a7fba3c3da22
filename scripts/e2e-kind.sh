#!/usr/bin/env bash
# End-to-end check of the Helm chart on a local kind cluster (needs a Docker
# engine and the `kind` binary; helm and kubectl come from `make k8s-tools`).
#
#   bash scripts/e2e-kind.sh up      create the cluster (kept if it exists)
#   bash scripts/e2e-kind.sh load    load $IMAGE into the cluster's node
#   bash scripts/e2e-kind.sh test    pytest -m e2e tests/e2e (installs the chart,
#                                    waits for a kill, its Event and the restart)
#   bash scripts/e2e-kind.sh down    delete the cluster
#
# `make e2e` builds the image and runs up, load and test. Environment:
#   KIND_CLUSTER     cluster name (default sentinel; kube context kind-NAME)
#   KIND_NODE_IMAGE  node image, e.g. kindest/node:v1.33.1 (default: kind's)
#   IMAGE            Sentinel image (default sentinel:<chart appVersion>)
#   KIND             kind binary (default: kind on PATH)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cluster="${KIND_CLUSTER:-sentinel}"
kind="${KIND:-kind}"
app_version="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$root/charts/sentinel/Chart.yaml")"
image="${IMAGE:-sentinel:$app_version}"
kubectl="$root/.tools/bin/kubectl"
python="$root/.venv/bin/python"

die() { echo "e2e-kind: $*" >&2; exit 1; }

need_docker() {
    command -v docker >/dev/null || die "docker not found; the kind e2e needs a Docker engine"
    docker info >/dev/null 2>&1 || die "cannot reach the Docker engine (docker info failed); start it, or check DOCKER_HOST"
}

need_kind() {
    command -v "$kind" >/dev/null || die "kind not found; install it (https://kind.sigs.k8s.io/docs/user/quick-start/#installation, e.g. go install sigs.k8s.io/kind@latest) or set KIND=/path/to/kind"
}

need_tools() {
    [[ -x "$kubectl" && -x "$root/.tools/bin/helm" ]] || die "helm/kubectl missing in .tools/bin; run: make k8s-tools"
}

up() {
    need_docker; need_kind; need_tools
    if "$kind" get clusters 2>/dev/null | grep -qx "$cluster"; then
        echo "e2e-kind: cluster $cluster exists, keeping it" >&2
    else
        "$kind" create cluster --name "$cluster" --config "$root/kind-config.yaml" \
            ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"} --wait 180s
    fi
    local minor
    minor="$("$kubectl" --context "kind-$cluster" version -o json \
        | "$python" -c 'import json,sys; print(int("".join(c for c in json.load(sys.stdin)["serverVersion"]["minor"] if c.isdigit())))')"
    ((minor >= 29)) || die "cluster $cluster runs Kubernetes 1.$minor; the chart needs >= 1.29 (set KIND_NODE_IMAGE=kindest/node:v1.33.1 and recreate)"
}

load() {
    need_docker; need_kind
    docker image inspect "$image" >/dev/null 2>&1 || die "image $image not found; build it with: make image"
    "$kind" load docker-image "$image" --name "$cluster"
}

test_() {
    need_tools
    SENTINEL_E2E_CONTEXT="kind-$cluster" SENTINEL_E2E_IMAGE="$image" \
        "$python" -m pytest -m e2e "$root/tests/e2e" -v
}

down() {
    need_kind
    "$kind" delete cluster --name "$cluster"
}

case "${1:-}" in
    up) up ;;
    load) load ;;
    test) test_ ;;
    down) down ;;
    *) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
