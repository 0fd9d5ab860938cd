# Every target runs inside .venv, which `make install` creates from requirements.lock: every
# package pinned with its hashes, so a fresh clone installs what the last `make lock` chose.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install lock run test test-faults lint typecheck bench clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install meterline with its development tools, as locked

lock: ## Re-resolve pyproject.toml's dependencies into requirements.lock (Python 3.11, with hashes)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --extra dev --generate-hashes --upgrade \
		--python-version 3.11 --python-platform x86_64-manylinux_2_28 -o requirements.lock

run: $(STAMP) ## Run the demo on embedded Kafka and ClickHouse and print the invoice summary
	$(BIN)/meterline run $(ARGS)

# Two processes (pytest-xdist), each test file whole in one of them: most of the suite
# waits on brokers, workers and subprocesses. TESTS_PROCESSES=0 runs it in this process.
TESTS_PROCESSES ?= 2

test: $(STAMP) ## Run the whole test suite (unit, property, integration against the real broker and engine)
	$(BIN)/python -m pytest -n $(TESTS_PROCESSES) --dist loadfile $(ARGS)

test-faults: $(STAMP) ## Only the fault test: SIGKILL the worker at random moments, check every total
	$(BIN)/python -m pytest -m faults -s $(ARGS)

lint: $(STAMP) ## Lint and check formatting with ruff; check the layers with import-linter
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP) ## Type-check with mypy (strict)
	$(BIN)/mypy

bench: $(STAMP) ## Run every benchmark in loadtests/ three times and write BENCHMARKS.md (not part of the tests)
	$(BIN)/python -m loadtests.all $(ARGS)

clean: ## Remove .venv and the embedded data directory
	rm -rf $(VENV) .meterline
