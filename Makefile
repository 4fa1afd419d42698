# The README's commands. Everything else is in hack/.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test unit lint crds cluster-up cluster-down

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -e '.[test,demo]'
	touch $@

## demo: local cluster + simulated GPU fleet + operator + examples; watch replicas fall back and return
demo: $(VENV)/.installed
	$(PY) hack/demo.py

## test: lint (ruff, import-linter, mypy), unit tests and tests on the local cluster (built on first use, then reused)
test: $(VENV)/.installed lint
	hack/build-cluster-binaries.sh all >/dev/null
	hack/build-tools.sh >/dev/null
	$(PY) -m pytest -q

unit: $(VENV)/.installed
	$(PY) -m pytest -q tests/unit

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check operator hack tests bench
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	$(PY) -m pytest --collect-only -q tests >/dev/null  # an import error in a test fails here, not as no test run

crds: $(VENV)/.installed
	$(PY) hack/gen_crds.py

cluster-up:
	hack/cluster.sh up

cluster-down:
	hack/cluster.sh down
