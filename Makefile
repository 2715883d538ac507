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
# The release model compiled with AOTInductor (ml/export.py): what `make serve` and the image run.
MODEL_PACKAGE := build/model.onnx
# Binaries the tests drive for real (Debian packages): a browser and its driver, a load generator,
# Prometheus and Alertmanager (promtool, amtool), nginx and its exporter, and a container engine:
# podman with runc (crun refuses this kind of host's cgroups), netavark for published ports,
# catatonit for pods, and debootstrap for base-image stand-ins where no registry answers.
# lomiri-wallpapers: photos that are not pets, for the not-a-pet detector's test.
APT_PACKAGES := chromium chromium-driver wrk prometheus prometheus-alertmanager nginx prometheus-nginx-exporter \
	podman runc netavark aardvark-dns iptables catatonit debootstrap lomiri-wallpapers
APT_BINARIES := chromium chromedriver wrk prometheus promtool amtool nginx prometheus-nginx-exporter \
	podman runc iptables catatonit debootstrap
APT_FILES := /usr/share/backgrounds/warty-final-ubuntu.png

# Build parameters (Jenkins passes its build buttons as these; 1/true and 0/false both work).
SKIP_TRAINING ?= 0
truthy = $(filter 1 true yes on,$(shell printf '%s' '$(1)' | tr '[:upper:]' '[:lower:]'))
# npm tools, each pinned by its lock file: the Jenkinsfile linter (npm-groovy-lint, in
# deploy/jenkins/) and the accessibility audit the browser tests run (axe-core, in tests/).
NODE_TOOLS := deploy/jenkins/node_modules/.installed tests/node_modules/.installed

.PHONY: help setup lock system-deps node-tools lint format test test-unit test-image checkout data train evaluate register \
	validate image push deploy smoke rollback status logs port-forward alerts k8s-config kind-down export-model serve mlflow-ui bench-train \
	bench-serve bench-engines replay report classify monitor-up monitor-down mail pipeline clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[1m%-14s\033[0m %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-serve.txt requirements-model.txt requirements-dev.txt requirements.lock pyproject.toml
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	@# TORCH_INDEX_URL (Jenkins: PyTorch's CPU index): torch and torchvision at the pinned versions
	@# from there first, as the Dockerfile does, instead of PyPI's multi-gigabyte CUDA build;
	@# their own dependencies then come from the lock like everything else.
	$(if $(TORCH_INDEX_URL),grep -E '^torch(vision)?==' requirements-model.txt \
		| $(PY) -m pip install -q --no-deps --index-url $(TORCH_INDEX_URL) -r /dev/stdin)
	@# requirements.lock constrains every package the pins pull in: a rebuild installs the same set.
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt -c requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	@touch $@

lock: ## Re-resolve requirements.lock after a pin changed (pip-tools; UPGRADE=1: newest versions the pins allow)
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	grep -E '^pip-tools==' requirements-dev.txt | $(PY) -m pip install -q -r /dev/stdin
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile $(if $(call truthy,$(UPGRADE)),--upgrade) \
		requirements.txt requirements-dev.txt

setup: $(STAMP) ## Create .venv and install pinned dependencies (idempotent)

system-deps: ## Install the Debian packages tests drive (chromium, wrk, prometheus, alertmanager, nginx, podman...) if missing
	@missing=$$(for b in $(APT_BINARIES); do command -v $$b >/dev/null || echo $$b; done; \
		for f in $(APT_FILES); do [ -e $$f ] || echo $$f; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] && [ "$${CI:-}" != true ]; then \
		echo "note: $$missing missing and not root: the tests that need them will skip"; exit 0; fi; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES)

%/node_modules/.installed: %/package.json %/package-lock.json
	npm ci --prefix $* --no-audit --no-fund --loglevel=error
	@touch $@

node-tools: $(NODE_TOOLS) ## Install the pinned npm tools (npm-groovy-lint for the Jenkinsfile, axe-core for the pages)

lint: $(STAMP) ## ruff, ruff format --check, mypy (app/, ml/), shellcheck (scripts), hadolint (Dockerfiles)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/shellcheck deploy/*.sh deploy/podman/*.sh deploy/jenkins/*.sh .ci/run
	$(BIN)/hadolint Dockerfile deploy/jenkins/Dockerfile deploy/jenkins/agent.Dockerfile deploy/podman/*.Containerfile

format: $(STAMP) ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint system-deps node-tools ## Everything CI checks: lint, unit, integration, service and delivery tests
	@mkdir -p build
	$(PY) -m pytest --junitxml=build/junit.xml

test-unit: $(STAMP) system-deps node-tools ## Tests that need no real photos, servers or container engine (JUnit, coverage in build/)
	@mkdir -p build
	$(PY) -m pytest -m "not photos and not servers and not container" --junitxml=build/junit-unit.xml \
		--cov=app --cov=ml --cov-report=term:skip-covered --cov-report=xml:build/coverage.xml

test-image: $(STAMP) system-deps ## The real image built with podman and run as the pod runs it (~10 min; make test runs it too)
	@mkdir -p build
	$(PY) -m pytest -m container --junitxml=build/junit-image.xml

checkout: ## Record what is being built (commit, branch, clean tree) in build/build-info.json
	@mkdir -p build
	@commit=$$(git rev-parse HEAD); branch=$${BRANCH_NAME:-$${GIT_BRANCH:-$$(git rev-parse --abbrev-ref HEAD)}}; \
	dirty=$$(git status --porcelain --untracked-files=no | wc -l); \
	printf '{"commit": "%s", "branch": "%s", "uncommitted_changes": %s}\n' "$$commit" "$${branch#origin/}" "$$dirty" \
		> build/build-info.json; \
	echo "building $$commit on $${branch#origin/} ($$dirty files with uncommitted changes)"

data: $(STAMP) ## Photos in data/raw (downloaded, or PETS_DIR=folder links it), then the prepare stage
	$(PY) -m ml.download
	$(DVC) repro prepare

train: data ## prepare → train → evaluate, robustness (DVC) and register; SKIP_TRAINING=1 ships @champion
ifneq ($(call truthy,$(SKIP_TRAINING)),)
	$(PY) -m ml.registry export-champion
	$(PY) -m ml.evaluate --manifest data/prepared/manifest.csv --split test --model models \
		--metrics metrics.json --reports reports
else
	$(DVC) repro
	$(PY) -m ml.registry register
endif

evaluate: data ## Evaluate models/ on the test split (metrics.json, plots)
	$(DVC) repro evaluate
	$(DVC) metrics show

register: $(STAMP) ## Register models/ as a version of CatsDogsClassifier
	$(PY) -m ml.registry register

validate: data ## Quality gate: models/ vs @champion; marks it @candidate or fails the build
	@mkdir -p build
	$(PY) -m ml.registry promote --report build/gate.json

image: $(STAMP) ## Docker Build: the serving image, tagged <git sha> and <model version>, Trivy-scanned
	deploy/image.sh build

push: $(STAMP) ## Push the image to GHCR (GHCR_USER/GHCR_TOKEN); :latest only from main
	deploy/image.sh push

deploy: $(STAMP) ## Kind: create, load, apply deploy/k8s, wait for the rollout (else the local stack)
	deploy/cluster.sh deploy

smoke: $(STAMP) ## /health, /ready, a known cat and dog, /metrics; passed: @champion and :latest move
	deploy/cluster.sh smoke

rollback: $(STAMP) ## The previous champion back in the registry (@champion) and in the cluster
	deploy/cluster.sh rollback

status: ## Pods, HPA, image and model version (or the local stack's processes)
	deploy/cluster.sh status

logs: ## Follow the API's logs
	deploy/cluster.sh logs

port-forward: ## kubectl port-forward the API, Prometheus, Grafana and Alertmanager
	deploy/cluster.sh port-forward

alerts: ## What is firing now (amtool against Alertmanager)
	deploy/cluster.sh alerts

k8s-config: $(STAMP) ## Generate the SLO rules, copy prometheus/, alertmanager/, grafana/ into deploy/k8s/monitoring/config/
	$(PY) prometheus/build_slo_rules.py
	$(PY) deploy/k8s_config.py

kind-down: ## Delete the Kind cluster
	deploy/cluster.sh down

$(MODEL_PACKAGE): models/model.safetensors models/model.json ml/export.py ml/graph.py | $(STAMP)
	$(PY) -m ml.export --model models --out $@

export-model: $(MODEL_PACKAGE) ## Export models/ as the ONNX graph the service runs (build/model.onnx, ~10 s)

serve: $(STAMP) $(MODEL_PACKAGE) ## The production server (Gunicorn, as in the image) on 127.0.0.1:$$PORT
	PORT=$(PORT) MODEL_PACKAGE=$(MODEL_PACKAGE) $(BIN)/gunicorn -c gunicorn.conf.py

mlflow-ui: $(STAMP) ## MLflow UI on http://127.0.0.1:5001
	$(BIN)/mlflow ui --backend-store-uri "$$($(PY) -m ml.tracking)" --host 127.0.0.1 --port 5001

bench-train: data ## Data-loading and training throughput, and each stage's wall time
	$(PY) -m tools.bench_train

bench-serve: $(STAMP) system-deps $(MODEL_PACKAGE) ## Draft decoding, inference options, server vs in-process throughput, RSS (CAMERA=dir: your own JPEGs too)
	$(PY) -m tools.bench_serve --package $(MODEL_PACKAGE) $(if $(CAMERA),--camera $(CAMERA))

bench-engines: $(STAMP) $(MODEL_PACKAGE) ## ONNX Runtime and OpenVINO, fp32 and int8, against the service's engine: labels, val accuracy, latency (LIMIT=n)
	$(PY) -m tools.bench_engines $(if $(LIMIT),--limit $(LIMIT))

replay: $(STAMP) ## Send labelled test photos (+feedback) to the service, then make report: RATE=5 COUNT=200 SHARE=0.5 MISLABEL=1
	$(PY) -m tools.replay --rate $${RATE:-5} --count $${COUNT:-200} --feedback-share $${SHARE:-0.5} $${MISLABEL:+--mislabel}
	$(MAKE) --no-print-directory report

report: $(STAMP) ## Post-deployment report from Prometheus, build/report/report.{md,html}: WINDOW=1h PROM=http://127.0.0.1:9090
	$(PY) -m tools.report --window $${WINDOW:-1h} --prometheus $${PROM:-http://127.0.0.1:9090}

classify: $(STAMP) ## A folder of photos through the service, answers in a CSV it resumes: DIR=folder OUT=answers.csv
	$(PY) -m tools.classify_folder "$${DIR:?set DIR to a folder of photos}" --out "$${OUT:-answers.csv}" --url "$${URL:-http://127.0.0.1:8000}"

monitor-up: $(STAMP) system-deps $(MODEL_PACKAGE) ## Service, Prometheus, Alertmanager, SMTP sink and MLflow on loopback (FAST=1 for demos)
	deploy/local-stack.sh up

monitor-down: ## Stop the local monitoring stack
	deploy/local-stack.sh down

mail: $(STAMP) ## The last emails the local SMTP sink received
	deploy/local-stack.sh mail

pipeline: ## The main job's stages, as Jenkins runs them (SKIP_TRAINING=1, DEPLOY=0, IMAGE_TAG=...)
	$(PYTHON) deploy/pipeline.py

clean: ## Remove caches and build output (keeps .venv, data and MLflow runs)
	rm -rf build .pytest_cache .mypy_cache .ruff_cache reports/*.tmp
