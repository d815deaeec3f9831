# Set-up and everyday commands. `make test` and `make demo` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: install test lint format demo bench clean

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(INSTALLED)

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check clipcli tests scripts
	$(VENV)/bin/ruff format --check clipcli tests scripts

format: install
	$(VENV)/bin/ruff check --fix clipcli tests scripts
	$(VENV)/bin/ruff format clipcli tests scripts

bench: install
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
