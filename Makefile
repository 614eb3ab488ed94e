# Two commands: `make run` serves the product with demo data; `make test` runs the whole suite.
VENV := .venv
PYTHON := $(VENV)/bin/python
# The stamp covers both requirement sets: a change to either reinstalls.
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | sha1sum | cut -c1-12)

.PHONY: run test lint venv bench-gateway bench-pipeline bench-sync clean-data

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -r requirements-dev.txt
	rm -f $(VENV)/.installed-* && touch $(STAMP)

venv: $(STAMP)

run: venv
	bash scripts/run.sh

test: venv
	bash scripts/test.sh

lint: venv
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/lint-imports

bench-gateway: venv
	bash scripts/bench.sh bench/gateway.py

bench-pipeline: venv
	bash scripts/bench.sh bench/pipeline.py

bench-sync: venv
	bash scripts/bench.sh bench/sync.py

clean-data:
	$(PYTHON) scripts/devservices.py down; rm -rf .data
