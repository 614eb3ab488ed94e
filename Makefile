# Two commands: `make run` serves the product with demo data; `make test` runs the whole suite.
VENV := .venv
PYTHON := $(VENV)/bin/python
# The stamp covers both requirement sets: a change to either reinstalls.
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | sha1sum | cut -c1-12)

.PHONY: run test test-cluster test-faults lint fuzz venv bench-gateway bench-pipeline bench-sync bench-bandwidth bench-rejoin clean-data

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

# Scale-out on real HAProxy, PgBouncer and Redis Sentinel (installed when missing); a few minutes.
test-cluster: venv
	bash scripts/test-cluster.sh

# Faults injected into a running server (README: Reliability): 3.5 to 5 minutes when every fault recovers, bounded at 9.
test-faults: venv
	bash scripts/test-faults.sh

# Schema-driven API fuzzing, longer than the bounded run in `make test` (README: Testing).
fuzz: venv
	bash scripts/fuzz.sh --max-examples 100 --phases examples,coverage,fuzzing,stateful

lint: venv
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/lint-imports

# One process per server, then 1 vs 2 web processes behind HAProxy, idle-socket memory, the floor.
bench-gateway: venv
	bash scripts/system-packages.sh haproxy:haproxy
	bash scripts/bench.sh bench/gateway.py
	bash scripts/bench.sh bench/cluster.py

bench-pipeline: venv
	bash scripts/bench.sh bench/pipeline.py

bench-sync: venv
	bash scripts/bench.sh bench/sync.py

bench-bandwidth: venv
	bash scripts/bench.sh bench/bandwidth.py

# Every socket of a web process rejoining at once with a replay (after a web restart).
bench-rejoin: venv
	bash scripts/bench.sh bench/rejoin.py

clean-data:
	$(PYTHON) scripts/devservices.py down; rm -rf .data
