# flagsched: `make run` runs the demo on a local Kafka + PostgreSQL it starts itself;
# `make test` runs lint, types and the whole test suite against real services.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The product's parts, each a distribution with its own pyproject.toml (README, "Parts"),
# sharing the flagsched import namespace; the root distribution is the CLI.
PARTS := schemas runtime producer consumer admin notifier devtools
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml $(PARTS:%=%/pyproject.toml) | sha1sum | cut -c1-12)

.PHONY: setup system-deps asyncapi-tools go-tools viewers run test lint format typecheck unit integration bench chaos chaos-hostile clean dev-up dev-down image

setup: system-deps $(STAMP) asyncapi-tools go-tools

# helm, kubeconform and KEDA's CRD schemas for the chart checks, built once from the
# Go module proxy into the dev cache (FLAGSCHED_DEV_HOME, by default ~/.cache/flagsched:
# bin/ and schemas/), like the Kafka jars; a cached tool is not built again. Without Go
# the checks skip (and fail when CI=true).
go-tools: $(STAMP)
	@$(BIN)/python -m flagsched.devstack.go_tools helm kubeconform keda

# A schedule's trace checked in a real Jaeger (tests/integration/test_trace_viewer.py).
# Not in `make test`: building Jaeger from its Go module took over 10 minutes cold on
# a 2-core machine; the binary is cached in the dev cache after the first run.
viewers: setup
	$(BIN)/python -m flagsched.devstack.go_tools jaeger
	$(BIN)/pytest -m viewers tests/integration/test_trace_viewer.py

# The official AsyncAPI parser validates the checked-in contract in the tests.
asyncapi-tools: tools/asyncapi/node_modules/.package-lock.json

tools/asyncapi/node_modules/.package-lock.json: tools/asyncapi/package.json tools/asyncapi/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  npm ci --prefix tools/asyncapi --ignore-scripts --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: the AsyncAPI parser test will skip (and fail when CI=true)" >&2; fi

system-deps:
	@bash deploy/local/ensure-system-deps.sh

$(STAMP): pyproject.toml $(PARTS:%=%/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@# compat mode: each part's src/ goes on sys.path (a .pth file), so the namespace's
	@# portions are real folders that mypy, import-linter and py-spy can read.
	$(BIN)/pip install -q --config-settings editable_mode=compat $(PARTS:%=-e ./%) -e '.[dev,bench]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

run: setup
	$(BIN)/flagsched demo

test: setup lint typecheck
	$(BIN)/pytest

unit: setup
	$(BIN)/pytest tests/unit

integration: setup
	$(BIN)/pytest tests/integration

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: setup
	$(BIN)/mypy

bench: setup
	$(BIN)/python -m bench --profile

# The long chaos run: 10,000 schedules with kills, broker restarts, database outages
# and rebalances, then the ledger check (docs/reliability.md).
chaos: setup
	$(BIN)/python -m bench.chaos --schedules 10000

# The same run with about 1 % hostile inputs (issue 11). Run `make chaos` first: this
# replays its seed and compares the healthy lateness p99 with bench/results/chaos.json.
chaos-hostile: setup
	$(BIN)/python -m bench.chaos --schedules 10000 --hostile-percent 1

dev-up: setup
	$(BIN)/flagsched dev up

dev-down: setup
	$(BIN)/flagsched dev down

# The container image (needs a Docker engine; see docs/deployment.md).
image:
	docker build -t flagsched:$$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml) .

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
