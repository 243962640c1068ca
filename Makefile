# The two README commands: `make demo` and `make test`. Each sets up .venv from scratch if needed.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -q --disable-pip-version-check
# CPU torch first where none is installed (a bare `torch` would pull a multi-GB CUDA build). Our machines'
# pip finds the CPU build of 2.13.0 on local disk; elsewhere pass TORCH_SPEC="torch --index-url
# https://download.pytorch.org/whl/cpu" (pip arguments, unquoted: write a range as torch~=2.13, not with < >).
TORCH_SPEC ?= torch==2.13.0

export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export GX_ANALYTICS_ENABLED := false
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test soak bench bench-all bench-scale setup clean serve stop

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install $(TORCH_SPEC)
	$(PIP) install -e ".[dev,openvino]"
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
PYTEST_ARGS ?= -n 2 --dist loadfile --durations=25

test: setup $(CHROMIUM) $(POSTGRES_PKG)
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The integrity state machine (tests/flows/test_integrity_properties.py) for as long as asked.
SOAK_MINUTES ?= 20
soak: setup
	EMBEDLINE_SOAK_SECONDS=$$(( $(SOAK_MINUTES) * 60 )) $(PY) -m pytest -q -s -p no:cacheprovider \
		tests/flows/test_integrity_properties.py -k test_soak

# sentence-transformers' own OpenVINO backend, for the bench only: its optimum-intel pulls
# transformers 5.5 (the project pins >=5.23 through sentence-transformers 6.2's peers), so it lives in an
# overlay venv whose own packages shadow the project's. Nothing of the project imports from it.
BENCH_VENV ?= .venv-bench
$(BENCH_VENV)/.installed: $(VENV)/.installed
	test -x $(BENCH_VENV)/bin/python || $(PY) -m venv $(BENCH_VENV)
	$(PY) -c "import sysconfig; print(f\"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\")" \
		> $$($(BENCH_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/zz-project.pth
	$(BENCH_VENV)/bin/python -m pip -q --disable-pip-version-check install \
		"sentence-transformers[openvino]==6.2.0" "$$($(PY) -c 'import torch; print("torch==" + torch.__version__.split("+")[0])')"
	$(BENCH_VENV)/bin/python -m pip -q --disable-pip-version-check uninstall -y torchvision  # breaks on CPU torch
	touch $@

# BENCH_ARGS reach bench/embed_throughput.py, e.g. make bench BENCH_ARGS="--docs 300 --rounds 5".
BENCH_ARGS ?=
bench: setup $(BENCH_VENV)/.installed
	$(PY) bench/embed_throughput.py --st-python $(BENCH_VENV)/bin/python $(BENCH_ARGS)

bench-all: bench
	$(PY) bench/embed_throughput.py --st-python $(BENCH_VENV)/bin/python --cap-isa avx2  # as on AVX2-only CPUs
	$(PY) bench/pipeline.py
	$(PY) bench/ingest_memory.py
	$(PY) bench/cli_startup.py
	$(PY) bench/incremental.py
	$(PY) bench/retention.py
	$(PY) bench/validation_cost.py
	$(PY) bench/model_change.py
	$(PY) bench/search.py --docs 64000
	$(PY) bench/scale_out.py
	$(PY) bench/footprint.py
	$(PY) bench/index_costs.py

# One run's planning and catalog cost at 1M documents, local catalog and PostgreSQL (not in bench-all:
# its first ingest alone takes far longer than five minutes on 2 cores). SCALE_ARGS="--docs 100000".
# No vector index by default (its build at 1M is the vector side: bench/index_costs.py measures it).
# The PostgreSQL arm needs Debian's postgresql, as `make test` does.
SCALE_ARGS ?=
bench-scale: setup $(POSTGRES_PKG)
	$(PY) bench/scale_plan.py --index-min-rows 2000000 $(SCALE_ARGS)

# A Prefect server with its UI on 127.0.0.1:4200, the cpu/gpu pools, every deployment, workers.
serve: setup
	VENV=$(VENV) deploy/local/serve.sh

stop:
	deploy/local/stop.sh

clean:
	rm -rf .embedline bench/out $(BENCH_VENV)
