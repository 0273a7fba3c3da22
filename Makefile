# Sentinel - the two commands a new user needs are `make demo` and `make test`.
# Both do all set-up themselves (system packages, virtualenv, helm/kubectl).

PYTHON      ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
TOOLS_BIN   := $(CURDIR)/.tools/bin
export PATH := $(CURDIR)/$(VENV)/bin:$(TOOLS_BIN):$(PATH)

.PHONY: demo test venv system-deps k8s-tools bench bench-ebpf clean vm-test bpf

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

system-deps:
	bash scripts/install-system-deps.sh

## The eBPF probe's CO-RE object (--probe ebpf), shipped in the wheel: Debian's clang
## (the BPF target) and libbpf-dev (bpf_helpers.h); no bpftool, no kernel headers
## (kernel_types.h names the few kernel fields it reads; libbpf relocates them).
## -mcpu=v3: 64-bit atomics (Linux 5.12+); clang 14 cannot emit them for v1.
BPF_DIR    := sentinel/probes/bpf
BPF_OBJ    := $(BPF_DIR)/sentinel.bpf.o
BPF_CFLAGS := -O2 -g -target bpf -mcpu=v3 -Wall -Werror
bpf: $(BPF_OBJ)
$(BPF_OBJ): $(BPF_DIR)/sentinel.bpf.c $(BPF_DIR)/kernel_types.h
	@command -v clang >/dev/null || { echo "make bpf: clang is missing: run 'make system-deps' (Debian: clang libbpf-dev)" >&2; exit 1; }
	@[ -e /usr/include/bpf/bpf_helpers.h ] || { echo "make bpf: bpf/bpf_helpers.h is missing: run 'make system-deps' (Debian: libbpf-dev)" >&2; exit 1; }
	clang $(BPF_CFLAGS) -I$(BPF_DIR) -c $< -o $@.tmp && mv $@.tmp $@

k8s-tools:
	sh scripts/install-k8s-tools.sh $(TOOLS_BIN) >/dev/null

## The main job: a real leaking process stopped by Sentinel, metrics and socket live.
demo: venv
	$(PY) scripts/demo.py

## Everything CI runs.
test: venv system-deps bpf k8s-tools
	$(PY) -m pytest

## A real cgroup v2 memory controller in a QEMU guest (these hosts are v1 hybrids):
## scripts/cgroup2-vm.py boots it once with every tests/vm/guest_*.py (about 20 s).
vm-test: venv system-deps
	bash scripts/make-base-image.sh
	$(PY) -m pytest tests/integration/test_cgroup2_vm.py -p no:cacheprovider

## Benchmark against the naive psutil loop, tini and dumb-init (installed here).
bench: venv
	command -v tini >/dev/null || apt-get install -y -q tini >/dev/null
	$(PY) -m pip install --quiet dumb-init
	$(PY) bench/run.py

## issue 12's figures alone: --probe ebpf beside polling, and the probe's cost per page
## fault to every workload (root, kernel BTF, libbpf1; bench/faults.py for more rounds).
bench-ebpf: venv bpf
	$(PY) bench/run.py --only ebpf

## Kubernetes: Helm chart, plain manifests, image, and an end-to-end run on kind
## (image, kind-*, e2e need a Docker engine and `kind`).
.PHONY: chart-sync chart-lint manifests image kind-up kind-load e2e
APP_VERSION  := $(shell sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$$/\1/p' charts/sentinel/Chart.yaml)
IMAGE        ?= sentinel:$(APP_VERSION)
KIND_CLUSTER ?= sentinel
export IMAGE KIND_CLUSTER

# Helm reads no file outside the chart: keep byte-identical copies of the
# docker-compose stack's rules and dashboard (tests/unit/test_chart.py checks).
chart-sync:
	@for pair in docker/prometheus/rules/sentinel.rules.yml:charts/sentinel/files/sentinel.rules.yml \
	             docker/grafana/dashboards/sentinel.json:charts/sentinel/files/dashboards/sentinel.json; do \
	    src=$${pair%%:*}; dst=$${pair#*:}; \
	    if [ -f "$$src" ]; then cp "$$src" "$$dst" && echo "chart-sync: $$src -> $$dst"; \
	    else echo "chart-sync: $$src does not exist; $$dst left as it is" >&2; fi; \
	done

chart-lint: k8s-tools
	for f in charts/sentinel/ci/*-values.yaml; do helm lint --strict charts/sentinel -f "$$f" || exit 1; done

manifests: k8s-tools
	bash scripts/render-manifests.sh

image: venv bpf
	rm -rf dist/wheelhouse
	$(PY) -m pip wheel --quiet --wheel-dir dist/wheelhouse . pip
	bash scripts/image-debs.sh dist/wheelhouse/debs
	docker build -f docker/Dockerfile -t $(IMAGE) .

kind-up: k8s-tools
	bash scripts/e2e-kind.sh up

kind-load: image kind-up
	bash scripts/e2e-kind.sh load

e2e: venv kind-load
	bash scripts/e2e-kind.sh test

clean:
	rm -rf $(VENV) .tools build dist *.egg-info .pytest_cache
