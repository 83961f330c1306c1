# `make demo` and `make test` are the README's two set-up commands.
VENV ?= .venv
STAMP := $(VENV)/.installed

.PHONY: setup demo check test bench lab

$(STAMP): pyproject.toml scripts/setup.sh
	VENV=$(VENV) bash scripts/setup.sh

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lam demo

# style, types and the layers contract, with zero findings: they run before the tests, so a
# finding fails `make test` (and CI) as a failing test does
check: $(STAMP)
	$(VENV)/bin/ruff check phonalign analysis lam_train tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: check
	$(VENV)/bin/python -m pytest

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do $(VENV)/bin/python $$b || exit 1; done

# JupyterLab on the notebooks/ folder: the `lab` extra is installed here on first use only (a
# Jupyter server makes every Ray worker of this environment start about 1 s slower; pyproject.toml)
lab: $(STAMP)
	$(VENV)/bin/python -c "import jupyterlab" 2>/dev/null || $(VENV)/bin/python -m pip install -q -e ".[lab]"
	$(VENV)/bin/jupyter lab notebooks/
