# Sentinel - the two commands a new user needs are `make demo` and `make test`.
# Both do all set-up themselves (system packages, virtualenv, helm/kubectl).

PYTHON      ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
TOOLS_BIN   := $(CURDIR)/.tools/bin
SHARED      ?= $(CURDIR)/../shared
export PATH := $(CURDIR)/$(VENV)/bin:$(TOOLS_BIN):$(PATH)

.PHONY: demo test venv system-deps k8s-tools bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

system-deps:
	bash scripts/install-system-deps.sh

k8s-tools:
	sh $(SHARED)/tools/install-k8s-tools.sh $(TOOLS_BIN) >/dev/null

## The main job: a real leaking process stopped by Sentinel, metrics and socket live.
demo: venv
	$(PY) scripts/demo.py

## Everything CI runs.
test: venv system-deps k8s-tools
	$(PY) -m pytest

bench: venv
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .tools build dist *.egg-info .pytest_cache
