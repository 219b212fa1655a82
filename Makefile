# Two commands for a fresh clone: `make run` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt --no-compile
# pip compiles the installed modules to bytecode on one core; this uses every core. Like pip, it
# skips modules that do not compile on this Python (torch ships a 3.12-only test module). src and
# bench too: where PYTHONDONTWRITEBYTECODE is set, every process would compile them again.
COMPILE := $(BIN)/python -m compileall -q -j 0 $(VENV)/lib src bench > /dev/null || true
PYTEST_ARGS ?=

.PHONY: run test test-slow lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Stamps re-run the install only when the dependency list changes.
$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) -e .
	$(COMPILE)
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) -e ".[dev]"
	$(COMPILE)
	@touch $@

run: $(VENV)/.installed
	$(BIN)/uavrl train --config configs/paper_a3c_private.yaml --set runner.total_env_steps=8000000 --run-dir runs/demo-$$(date +%Y%m%d-%H%M%S) --evaluate --bound --episodes 30

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
