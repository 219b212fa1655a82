# Two commands for a fresh clone: `make run` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt
PYTEST_ARGS ?=

.PHONY: run test test-slow lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Stamps re-run the install only when the dependency list changes.
$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) -e .
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) -e ".[dev]"
	@touch $@

run: $(VENV)/.installed
	$(BIN)/uavrl train --config configs/paper_a3c_private.yaml --run-dir runs/demo-$$(date +%Y%m%d-%H%M%S) --evaluate

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -m "not slow" -n 2 --dist loadscope $(PYTEST_ARGS)

test-slow: $(VENV)/.installed-dev
	$(BIN)/pytest -m slow $(PYTEST_ARGS) || [ $$? -eq 5 ]  # 5: no slow test collected

bench: $(VENV)/.installed
	$(BIN)/uavrl bench env --csv runs/bench_env.csv

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
