# redis-scim: every target bootstraps the virtual environment it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SAMVENV := .venv-sam
# sam build (no container) needs the Lambda runtime's interpreter on PATH (pyenv carries 3.12/3.13).
SAM_PYENV ?= 3.11.7:3.12.1:3.13.0
SAM    := SAM_CLI_TELEMETRY=0 PYENV_VERSION=$(SAM_PYENV) $(SAMVENV)/bin/sam
# samconfig.toml environment for deploy: dev or prod
ENV    ?= dev

.PHONY: run test check-template lint build deploy bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

$(SAMVENV)/bin/sam:
	$(PYTHON) -m venv $(SAMVENV)
	$(SAMVENV)/bin/pip install --quiet --upgrade pip
	$(SAMVENV)/bin/pip install --quiet aws-sam-cli==1.170.0

## run: the whole system on this machine (moto, embedded Valkey, SCIM API, applier, reconciler)
run: $(BIN)/.installed
	$(BIN)/python -m redis_scim.local

## test: the template checks, then the whole suite (unit, integration on moto + real Valkey/Redis, end to end)
test: $(BIN)/.installed check-template
	$(BIN)/ruff check layers functions tests
	$(BIN)/pytest -q

## check-template: what CI requires of template.yaml: cfn-lint, sam validate --lint, sam build (no container)
check-template: $(BIN)/.installed $(SAMVENV)/bin/sam
	$(BIN)/cfn-lint template.yaml
	$(SAM) validate --lint
	$(SAM) build --cached

lint: $(BIN)/.installed
	$(BIN)/ruff check layers functions tests
	$(BIN)/mypy
	$(BIN)/cfn-lint template.yaml

build: $(SAMVENV)/bin/sam
	$(SAM) build

## deploy: build, then deploy the samconfig.toml environment ENV (make deploy ENV=prod)
deploy: build
	$(SAM) deploy --guided --config-env $(ENV)

## bench: every benchmark against its target, written to bench/results.json (BENCH_QUICK=1: reduced, ~2 min)
bench: $(BIN)/.installed
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(SAMVENV) .aws-sam .pytest_cache .mypy_cache .ruff_cache
