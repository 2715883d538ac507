# One entry point for people, Jenkins and CI. `make help` lists the targets.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

PYTHON ?= python3.11
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
# DVC stages call `python`: the venv's, with DVC's analytics off.
DVC := PATH="$(BIN):$$PATH" DVC_NO_ANALYTICS=1 $(BIN)/dvc
export PYTHONUNBUFFERED := 1

PORT ?= 8000
# Binaries the tests drive for real (Debian packages): a browser and its driver, a load generator,
# Prometheus and Alertmanager (promtool, amtool).
APT_PACKAGES := chromium chromium-driver wrk prometheus prometheus-alertmanager
APT_BINARIES := chromium chromedriver wrk promtool amtool

.PHONY: help setup system-deps lint format test test-unit data train evaluate register validate serve \
	mlflow-ui bench-train bench-serve replay monitor-up monitor-down mail pipeline clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[1m%-14s\033[0m %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	@touch $@

setup: $(STAMP) ## Create .venv and install pinned dependencies (idempotent)

system-deps: ## Install the Debian packages tests drive (chromium, wrk, prometheus, alertmanager) if missing
	@missing=$$(for b in $(APT_BINARIES); do command -v $$b >/dev/null || echo $$b; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] && [ "$${CI:-}" != true ]; then \
		echo "note: $$missing missing and not root: the tests that need them will skip"; exit 0; fi; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES)

lint: $(STAMP) ## ruff check, ruff format --check, mypy on app/ and ml/
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP) ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint system-deps ## Everything CI checks: lint, unit, integration and service tests
	@mkdir -p build
	$(PY) -m pytest --junitxml=build/junit.xml

test-unit: $(STAMP) ## Tests that need neither real photos nor other binaries
	$(PY) -m pytest -m "not integration"

data: $(STAMP) ## Find (or download) the photos and run the prepare stage
	$(PY) -m ml.download
	$(DVC) repro prepare

train: data ## prepare → train → evaluate (DVC), then register the model in MLflow
	$(DVC) repro evaluate
	$(PY) -m ml.registry register

evaluate: data ## Evaluate models/ on the test split (metrics.json, plots)
	$(DVC) repro evaluate
	$(DVC) metrics show

register: $(STAMP) ## Register models/ as a version of CatsDogsClassifier
	$(PY) -m ml.registry register

validate: data ## Quality gate: models/ vs @champion; moves the alias or fails
	$(PY) -m ml.registry promote

serve: $(STAMP) ## The production server (Gunicorn, as in the image) on 127.0.0.1:$$PORT
	PORT=$(PORT) $(BIN)/gunicorn -c gunicorn.conf.py

mlflow-ui: $(STAMP) ## MLflow UI on http://127.0.0.1:5001
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5001

bench-train: data ## Data-loading and training throughput, and each stage's wall time
	$(PY) -m ml.bench_train

bench-serve: $(STAMP) system-deps ## Draft decoding, server vs in-process throughput, latency, RSS
	$(PY) -m app.bench_serve

replay: $(STAMP) ## Send labelled test photos (+feedback) to the service: RATE=5 COUNT=200 SHARE=0.5 MISLABEL=1
	$(PY) -m app.replay --rate $${RATE:-5} --count $${COUNT:-200} --feedback-share $${SHARE:-0.5} $${MISLABEL:+--mislabel}

monitor-up: $(STAMP) system-deps ## Service, Prometheus, Alertmanager, SMTP sink and MLflow on loopback (FAST=1 for demos)
	deploy/local-stack.sh up

monitor-down: ## Stop the local monitoring stack
	deploy/local-stack.sh down

mail: $(STAMP) ## The last emails the local SMTP sink received
	deploy/local-stack.sh mail

pipeline: ## The main job with local defaults (stages so far: setup, lint, tests, data, train, validate)
	$(MAKE) setup
	$(MAKE) lint
	$(MAKE) test-unit
	$(MAKE) data
	$(MAKE) train
	$(MAKE) validate

clean: ## Remove caches and build output (keeps .venv, data and MLflow runs)
	rm -rf build .pytest_cache .mypy_cache .ruff_cache reports/*.tmp
