# Two commands: `make run` (the whole service) and `make test` (the suite). Both build the venv first.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
DEPS := $(VENV)/.deps-installed

.PHONY: run test test-all lint bench-submit clean

$(DEPS): requirements.txt pyproject.toml
	@bash deploy/local/install_wordnet.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(DEPS)

run: $(DEPS)
	$(BIN)/python -m deploy.local.run

test: $(DEPS)
	@bash tests/install_browser.sh
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-all: $(DEPS)
	@bash tests/install_browser.sh
	$(BIN)/python -m pytest -m "" $(PYTEST_ARGS)

lint: $(DEPS)
	$(BIN)/ruff check .

bench-submit: $(DEPS)
	$(BIN)/python -m bench.submit $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
