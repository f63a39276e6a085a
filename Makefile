# Two commands do all the set-up on a fresh machine:
#   make demo-agent-crash-resume   the seed tutorial's crash-and-resume demo, asserted
#   make test                      every test
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: help venv chromium strace test test-slow test-thorough test-fast lint typecheck demo-agent-crash-resume demo-cluster demo-pydantic-ai demo-openai-agents demo-langgraph bench soak clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  %-26s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || { echo "creating the virtualenv $(VENV)"; $(PYTHON) -m venv $(VENV); }
	@echo "installing ironflow and its test tools into $(VENV) (about a minute)..."
	@$(PY) -m pip install --quiet --upgrade pip
	@# setuptools boxes an "Editable installation" notice about same-named folders
	@# (none here); the filter hides that notice only.
	@PYTHONWARNINGS="ignore:Editable installation" $(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)
	@echo "installed; activate it in each terminal with: source $(VENV)/bin/activate"

venv: $(STAMP) ## create .venv and install ironflow with its test tools

STRACE ?= strace
strace: ## Debian's strace for the fsync-order test: installed as root, else explained
	@if command -v $(STRACE) >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's strace for the fsync-order test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq strace >/dev/null; \
	else \
		echo "note: the fsync-order test traces a worker with strace and is skipped without it;"; \
		echo "      install it with: sudo apt-get install strace"; \
	fi

CHROMIUM ?= /usr/bin/chromium
chromium: ## Debian's Chromium for the dashboard's browser tests: installed as root, else explained
	@if [ -x $(CHROMIUM) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's chromium for the dashboard's browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "note: the dashboard's browser tests need Chromium and are skipped without it;"; \
		echo "      install it with: sudo apt-get install chromium"; \
	fi

# Two processes (pytest-xdist), each test file on one of them so that a module's server
# or browser starts once; `pytest` alone runs serially. XDIST=0 runs make test serially.
XDIST ?= 2
test: $(STAMP) chromium strace ## run every test (the short soak and the browser tests included)
	$(PY) -m pytest -q $(if $(filter 0,$(XDIST)),,-n $(XDIST) --dist loadfile)

test-slow: $(STAMP) ## the long soaks marked slow (make test runs their short versions)
	$(PY) -m pytest -q -m slow

test-thorough: $(STAMP) ## every property and fuzz test with the thorough profile (1000 examples each; long)
	@# 1000 examples make one property test run for many minutes: an hour each, not 300 s
	HYPOTHESIS_PROFILE=thorough $(PY) -m pytest -q -m hypothesis --hypothesis-show-statistics --timeout=3600

test-fast: $(STAMP) ## unit tests only, no process-level tests
	$(PY) -m pytest -q -m 'not process and not slow'

lint: $(STAMP) ## ruff
	$(VENV)/bin/ruff check ironflow tests examples

typecheck: $(STAMP) ## mypy --strict on the package
	$(VENV)/bin/mypy

demo-agent-crash-resume: $(STAMP) ## the seed demo: serve, worker, emit, kill -9, resume, assert
	$(PY) examples/doc_processor/demo.py

demo-cluster: $(STAMP) ## the crash demo on embedded PostgreSQL, two servers, two workers: kill -9 a worker and a server, resume, assert
	$(PY) -m examples.doc_processor.cluster_demo

demo-pydantic-ai: $(STAMP) ## a Pydantic AI agent under IronflowAgent: kill -9 between model requests, resume, assert
	$(PY) -m examples.pydantic_ai_agent.demo

demo-openai-agents: $(STAMP) ## an Agents SDK workflow under IronflowRunner: kill -9 between model requests, resume, assert
	$(PY) -m examples.openai_agents_agent.demo

demo-langgraph: $(STAMP) ## a LangGraph graph checkpointed by IronflowSaver: kill -9 mid-graph, resume, assert
	$(PY) -m examples.langgraph_agent.demo

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e '.[bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) ## ironflow vs DBOS, LangGraph, raw LMDB (options: BENCH_ARGS="--reps 3")
	$(PY) -m bench $(BENCH_ARGS)

.PHONY: bench-dashboard
bench-dashboard: $(STAMP) chromium ## the dashboard's targets: 100,000 runs, a 1,000-step run, live latency
	$(PY) -m bench.dashboard $(BENCH_ARGS)

SOAK_SECONDS ?= 300
SOAK_MODES ?= workers server
SOAK_STORE ?= lmdb
SOAK_SUFFIX := $(if $(filter postgres,$(SOAK_STORE)),-postgres,)
soak: $(STAMP) ## kill -9 soak, then audit: SOAK_SECONDS (300) per mode in SOAK_MODES; SOAK_STORE=postgres: 2 servers, 3 workers, PostgreSQL restarted
	@for mode in $(SOAK_MODES); do \
		$(PY) -m tests.soak --mode $$mode --store $(SOAK_STORE) --seconds $(SOAK_SECONDS) \
			--json bench/results/soak-$$mode$(SOAK_SUFFIX).json || exit 1; \
	done

clean: ## remove the virtualenv and local data
	rm -rf $(VENV) .ironflow .pytest_cache .mypy_cache
