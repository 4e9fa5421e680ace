# The two commands a new user needs:
#   make run   set up a virtualenv, publish a default model if the repository has none, serve it
#   make test  set up a virtualenv with the test tools, lint, type-check, run the tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MODEL_REPO ?= model_repo
DEFAULT_MODEL ?= demo

.PHONY: run test lint typecheck pytest train-default system-deps bench clean

$(VENV)/.run-installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[train]'
	touch $@

$(VENV)/.test-installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[train,test]'
	touch $@ $(VENV)/.run-installed

train-default: $(VENV)/.run-installed
	@if ls -d $(MODEL_REPO)/*/[0-9]* >/dev/null 2>&1; then \
		echo "model repository $(MODEL_REPO) already holds a model"; \
	else \
		$(BIN)/recserve train --data synthetic --model $(DEFAULT_MODEL) --repository $(MODEL_REPO); \
	fi

run: train-default
	$(BIN)/recserve serve --model-repository $(MODEL_REPO)

lint: $(VENV)/.test-installed
	$(BIN)/ruff check .

typecheck: $(VENV)/.test-installed
	$(BIN)/mypy --strict modelrepo service training recserve

pytest: $(VENV)/.test-installed
	$(BIN)/pytest

test: lint typecheck pytest

# Tools some tests and benchmarks drive (promtool, wrk). Debian/Ubuntu; needs root.
system-deps:
	@command -v promtool >/dev/null && command -v wrk >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus wrk >/dev/null; }

bench: $(VENV)/.test-installed
	$(BIN)/python bench/serve_bench.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
