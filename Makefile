# The two README commands: `make demo` and `make test`. Each sets up .venv from scratch if needed.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -q --disable-pip-version-check
# CPU torch first where none is installed (a bare `torch` would pull a multi-GB CUDA build).
TORCH_SPEC ?= torch==2.13.0

export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export GX_ANALYTICS_ENABLED := false
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test soak bench bench-all setup clean serve stop

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install "$(TORCH_SPEC)"
	$(PIP) install -e ".[dev]"
	touch $@

demo: setup
	$(VENV)/bin/embedline demo

# Debian's chromium, which the Prefect UI test drives headless (installed once; needs root and apt).
CHROMIUM ?= /usr/bin/chromium
$(CHROMIUM):
	DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null

# Debian's PostgreSQL, which the Postgres-catalog tests start on a private port (needs root and apt).
INITDB := $(firstword $(wildcard /usr/lib/postgresql/*/bin/initdb))
POSTGRES_PKG := $(if $(INITDB),,postgresql)
.PHONY: postgresql
postgresql:
	DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null

# Two processes, whole files each (module fixtures such as the served Prefect stay in one process).
PYTEST_ARGS ?= -n 2 --dist loadfile

test: setup $(CHROMIUM) $(POSTGRES_PKG)
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The integrity state machine (tests/flows/test_integrity_properties.py) for as long as asked.
SOAK_MINUTES ?= 20
soak: setup
	EMBEDLINE_SOAK_SECONDS=$$(( $(SOAK_MINUTES) * 60 )) $(PY) -m pytest -q -s -p no:cacheprovider \
		tests/flows/test_integrity_properties.py -k test_soak

bench: setup
	$(PY) bench/embed_throughput.py

bench-all: bench
	$(PY) bench/pipeline.py
	$(PY) bench/incremental.py
	$(PY) bench/validation_cost.py
	$(PY) bench/model_change.py
	$(PY) bench/search.py --docs 64000
	$(PY) bench/scale_out.py
	$(PY) bench/footprint.py
	$(PY) bench/index_costs.py

# A Prefect server with its UI on 127.0.0.1:4200, the cpu/gpu pools, every deployment, workers.
serve: setup
	VENV=$(VENV) deploy/local/serve.sh

stop:
	deploy/local/stop.sh

clean:
	rm -rf .embedline bench/out
