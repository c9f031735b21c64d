# Two commands: `make up` (whole stack in the background) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: up down status test lint faults k8s-tools clients mail logs bench soak clean

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $(STAMP)

up: $(STAMP) ## install what is missing, start everything, print the URLs
	$(PY) -m stack.stack up

down: ## stop what `make up` started
	@if test -x $(PY); then $(PY) -m stack.stack down; else $(PYTHON) -m stack.stack down; fi

status: ## show each part
	@$(PYTHON) -m stack.stack status

# kubeconform (a Go module) and the Kubernetes and KEDA schemas it validates deploy/k8s against, made
# from the Kubernetes and KEDA sources the Go module proxy serves (stack/k8s_schemas.py): no download
# at test time. tests/test_k8s.py uses them.
GO ?= $(shell command -v go || echo /usr/local/go/bin/go)
KUBECONFORM_VERSION := v0.8.0
KUBERNETES_MODULE := k8s.io/kubernetes@v1.37.2
KEDA_MODULE := github.com/kedacore/keda/v2@v2.20.2
K8S_STAMP := $(VENV)/.k8s-installed
MODULE_DIR = $$(cd /tmp && $(GO) mod download -json $(1) | $(abspath $(PY)) -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')

$(K8S_STAMP): $(STAMP) stack/k8s_schemas.py
	GOBIN=$(abspath $(VENV))/bin GOFLAGS=-mod=mod $(GO) install github.com/yannh/kubeconform/cmd/kubeconform@$(KUBECONFORM_VERSION)
	$(PY) -m stack.k8s_schemas $(VENV)/k8s-schemas $(call MODULE_DIR,$(KUBERNETES_MODULE)) $(call MODULE_DIR,$(KEDA_MODULE))
	@touch $(K8S_STAMP)

k8s-tools: $(K8S_STAMP) ## kubeconform and the schemas for deploy/k8s

test: $(STAMP) $(K8S_STAMP) ## lint, unit tests (no broker, no database), then the integration suite on its own stack
	$(PY) -m ruff check .
	$(PY) -m pytest -q tests/unit
	@# the console's browser tests drive Debian's Chromium with Playwright (its own browser download is not used)
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	$(PY) -m pytest --ignore=tests/unit $(PYTEST_ARGS)

lint: $(STAMP) ## ruff (rules in pyproject.toml)
	$(PY) -m ruff check .

faults: $(STAMP) ## a 3-node RabbitMQ cluster under var/cluster, kill the node the services use, check nothing is lost
	$(PY) -m pytest faults $(PYTEST_ARGS)

# Generated clients and the OpenAPI linter (tests/clients/): their own Python environment, the
# openapi-generator CLI jar from Maven Central and @redocly/cli from npm, all pinned, under .venv/clients
CLIENTS := $(VENV)/clients
CLIENTS_STAMP := $(CLIENTS)/.installed
OPENAPI_GENERATOR_VERSION := 7.25.0

$(CLIENTS_STAMP): $(STAMP) tests/clients/requirements.txt tests/clients/package.json tests/clients/package-lock.json
	@test -x $(CLIENTS)/venv/bin/python || $(PYTHON) -m venv $(CLIENTS)/venv
	$(CLIENTS)/venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/clients/requirements.txt
	@command -v mvn >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq maven)
	mvn -q -B org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy \
	  -Dartifact=org.openapitools:openapi-generator-cli:$(OPENAPI_GENERATOR_VERSION) -DoutputDirectory=$(CLIENTS)
	mkdir -p $(CLIENTS)/node && cp tests/clients/package.json tests/clients/package-lock.json $(CLIENTS)/node/
	npm ci --silent --no-audit --no-fund --prefix $(CLIENTS)/node
	@touch $(CLIENTS_STAMP)

clients: $(CLIENTS_STAMP) ## generate two Python clients from the OpenAPI document, drive journeys with them, lint it
	CLIENT_TOOLS=$(abspath $(CLIENTS)) OPENAPI_GENERATOR_JAR=$(abspath $(CLIENTS))/openapi-generator-cli-$(OPENAPI_GENERATOR_VERSION).jar \
	  $(PY) -m pytest tests/clients $(PYTEST_ARGS)

BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP) bench/requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) ## own isolated stack (TEST_INSTANCE=bench), ratios against same-run baselines
	@command -v wrk >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk)
	$(PY) -m bench $(BENCH_ARGS)

soak: $(STAMP) ## own isolated stack (TEST_INSTANCE=soak), SOAK_SECONDS of mixed load, then checks
	$(PY) -m soak

logs:
	@tail -n 50 var/log/*.log

mail: ## the newest mail the local SMTP sink received, decoded (TO=<address>: the newest to them)
	@$(PYTHON) -m stack.mail $(if $(TO),--to $(TO))

clean: down
	rm -rf var
