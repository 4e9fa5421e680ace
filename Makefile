# The two commands a new user needs:
#   make run   set up a virtualenv, publish a default model if the repository has none, serve it,
#              and say where to go once it is ready
#   make test  check the system tools the tests drive (installing them as root on Debian/Ubuntu),
#              set up a virtualenv with the test tools, lint, type-check, run the tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MODEL_REPO ?= model_repo
DEFAULT_MODEL ?= demo
# Where `make run` listens: the server's own environment variables, else its defaults.
HOST ?= $(or $(RECSERVE_HOST),127.0.0.1)
PORT ?= $(or $(RECSERVE_PORT),8000)

# System tools the tests drive, each as command:Debian-package. promtool checks the Prometheus
# rules and dashboard queries, prometheus scrapes a live server, curl runs the README's examples,
# wrk drives the benchmarks.
SYSTEM_TOOLS := promtool:prometheus prometheus:prometheus curl:curl wrk:wrk

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

# Printed by `make run` once /v2/health/ready answers 200: where the documentation is and one
# request to try. It runs beside the server (which keeps the terminal and its signals), gives up
# when the server's shell exits, and costs the server nothing but a readiness probe every 0.5 s.
define ANNOUNCE_READY
import json, os, shlex, sys, time, urllib.request
from pathlib import Path
from modelrepo.layout import USERS_FILE, list_versions

host, port, repository, model = sys.argv[1:5]
url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{port}"
shell, deadline = os.getppid(), time.monotonic() + 3600
while True:
    if os.getppid() != shell or time.monotonic() > deadline:
        sys.exit(0)
    try:
        with urllib.request.urlopen(url + "/v2/health/ready", timeout=2) as reply:
            if reply.status == 200:
                break
    except OSError:
        pass
    time.sleep(0.5)
try:
    newest = Path(repository, model, str(list_versions(Path(repository, model))[-1]))
    user = (newest / USERS_FILE).read_text(encoding="utf-8").split("\n", 1)[0]
    body = json.dumps({"user_id": user, "k": 5})
    example = (f"curl -X POST {url}/v1/models/{model}/recommend "
               f"-H 'Content-Type: application/json' -d {shlex.quote(body)}")
except (OSError, IndexError):
    example = f"curl -X POST {url}/v2/repository/index"
print(f"\nrecserve is ready at {url}\n  API documentation: {url}/docs\n  try: {example}\n",
      flush=True)
endef
export ANNOUNCE_READY

run: train-default
	@$(BIN)/python -c "$$ANNOUNCE_READY" '$(HOST)' '$(PORT)' '$(MODEL_REPO)' '$(DEFAULT_MODEL)' & \
	$(BIN)/recserve serve --model-repository $(MODEL_REPO) --host $(HOST) --port $(PORT)

lint: $(VENV)/.test-installed
	$(BIN)/ruff check .

typecheck: $(VENV)/.test-installed
	$(BIN)/mypy --strict modelrepo service training recserve

pytest: system-deps $(VENV)/.test-installed
	$(BIN)/pytest

# system-deps first: a missing tool stops the run before minutes of installing and linting.
test: system-deps lint typecheck pytest

# The system tools above, and Python's venv module when the virtualenv does not exist yet. Present:
# nothing to do. Missing, as root with apt-get: installed. Otherwise: one line naming what is
# missing and the command that installs it, and a failure.
system-deps:
	@missing=; packages=; \
	add() { missing="$$missing $$1"; \
		case " $$packages " in *" $$2 "*) ;; *) packages="$${packages:+$$packages }$$2" ;; esac; }; \
	for pair in $(SYSTEM_TOOLS); do \
		command -v "$${pair%%:*}" >/dev/null 2>&1 || add "$${pair%%:*}" "$${pair#*:}"; \
	done; \
	test -x $(BIN)/python || $(PYTHON) -c 'import ensurepip, venv' >/dev/null 2>&1 || \
		add "$(notdir $(PYTHON))-venv" python3-venv; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	install="apt-get install -y $$packages"; \
	if ! command -v apt-get >/dev/null 2>&1; then \
		echo "missing:$$missing; install them with your package manager (Debian/Ubuntu: $$install)" >&2; \
		exit 1; \
	fi; \
	if [ "$$(id -u)" != 0 ]; then \
		echo "missing:$$missing; install them with: sudo $$install" >&2; \
		exit 1; \
	fi; \
	echo "installing$$missing: $$install"; \
	apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$packages \
		>/dev/null || exit 1; \
	for pair in $(SYSTEM_TOOLS); do \
		command -v "$${pair%%:*}" >/dev/null 2>&1 || \
			{ echo "still missing after $$install: $${pair%%:*}" >&2; exit 1; }; \
	done

bench: $(VENV)/.test-installed
	$(BIN)/python bench/serve_bench.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
