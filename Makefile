# Two commands: `make up` (whole stack in the background) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: up down status test logs bench soak clean

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

test: $(STAMP) ## start what tests need (own vhost, databases, ports) and run pytest
	@# the console's browser tests drive Debian's Chromium with Playwright (its own browser download is not used)
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	$(PY) -m pytest $(PYTEST_ARGS)

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

clean: down
	rm -rf var
