# journeyrec — every target creates .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?= ../shared/data
# the simulator starts 2024-01-01 and runs 120 days: test on the last 20 days
SIM_SPLIT ?= 2024-04-10

DEMO := demo
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install test lint typecheck check run demo-model bench eval ab chaos readme readme-example console-shots clean

# One install at a time: `make run` and `make test` started together both find the stamp missing, and two
# pips writing one venv break each other. flock(1) serialises the recipe; whoever waited finds the stamp
# fresh and skips the install. The stamp is written last, so a failed install is retried next time.
LOCK := $(VENV).lock

$(STAMP): pyproject.toml
	flock $(LOCK) sh -ec ' \
	  if [ -f $(STAMP) ] && [ $(STAMP) -nt pyproject.toml ]; then echo "$(VENV): up to date"; exit 0; fi; \
	  test -x $(BIN)/pip || $(PY) -m venv --clear $(VENV); \
	  $(BIN)/pip install --quiet --upgrade pip; \
	  $(BIN)/pip install --quiet -e ".[dev]"; \
	  touch $(STAMP)'

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check models training service journeyrec tests scripts
	$(BIN)/ruff format --check models training service journeyrec tests scripts

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

# The demo storefront: simulated once, a model trained on it once (both under demo/, git-ignored).
$(DEMO)/sim/events.csv: | $(STAMP)
	$(BIN)/journeyrec simulate --out $(DEMO)/sim --visitors 3000 --items 600 --seed 7

$(DEMO)/models/latest: $(DEMO)/sim/events.csv
	$(BIN)/journeyrec train --events $(DEMO)/sim/events.csv --catalog $(DEMO)/sim/catalog.csv \
		--out $(DEMO)/models --epochs 10

demo-model: $(STAMP) $(DEMO)/models/latest

# Serves the demo on http://127.0.0.1:8000 with the embedded store and API keys off (local only).
run: demo-model
	@echo "journeyrec demo: http://$(HOST):$(PORT)  (OpenAPI: http://$(HOST):$(PORT)/schema)"
	@echo "try: curl -s 'http://$(HOST):$(PORT)/v1/visitors/demo-visitor/recommendations?k=5&placement=home'"
	$(BIN)/journeyrec serve --models $(DEMO)/models --host $(HOST) --port $(PORT) --insecure-no-auth

# Offline evaluations on public and simulated data; JSON + HTML reports under reports/ (git-ignored), the
# JSON also rendered into the README's table.
eval: $(STAMP)
	mkdir -p reports
	$(BIN)/journeyrec evaluate --preset uci-online-retail --events $(DATA)/uci-online-retail/by-day \
		--split-at 2011-07-01 --k 10 --json reports/uci-online-retail.json --report reports/uci-online-retail.html
	$(BIN)/journeyrec evaluate --preset movielens-100k --train $(DATA)/movielens-100k/ua.base \
		--test $(DATA)/movielens-100k/ua.test --exclude-seen --k 10 \
		--json reports/movielens-100k.json --report reports/movielens-100k.html
	$(BIN)/journeyrec evaluate --preset movielens-100k --train $(DATA)/movielens-100k/ua.base \
		--test $(DATA)/movielens-100k/ua.test --exclude-seen --k 10 --cold-items 0.2 \
		--models stage_aware,lightfm --json reports/movielens-100k-cold.json
	$(BIN)/journeyrec simulate --out reports/sim --visitors 20000 --seed 1
	$(BIN)/journeyrec evaluate --events reports/sim/events.csv --catalog reports/sim/catalog.csv \
		--split-at $(SIM_SPLIT) --k 10 --json reports/simulated.json --report reports/simulated.html
	$(BIN)/python -m scripts.readme

# Both benchmarks write their figures to reports/bench.json, which the README's table is generated from.
# The service benchmark loads the server with wrk (Debian's package; installed here when apt-get may run,
# else the script falls back to a slower Python load generator and says so).
bench: $(STAMP)
	command -v wrk >/dev/null || apt-get install -y -qq wrk >/dev/null 2>&1 || echo "wrk not installed: using httpx"
	$(BIN)/python -m scripts.bench_train --visitors 20000 --threads 2
	$(BIN)/python -m scripts.bench_service
	$(BIN)/python -m scripts.readme

# A simulated A/B test (stage-aware blend vs a stage-agnostic control) on a 2-worker server over Redis
# db 14, started and stopped by the script: per-stage results with intervals, reports/ab-sim.json.
ab: $(STAMP)
	$(BIN)/python -m scripts.ab_sim --serve --visitors 20000

# Faults under load on loopback (scripts/chaos.py): its own redis-server with AOF (and its own 3-master
# cluster), a 2-worker server; kill -9 of Redis, of a worker and of a cluster master, 10 model
# publications of which 4 are damaged. Prints the figures, writes reports/chaos.json, exits 1 when a check
# fails. Needs redis-server and redis-cli (Debian's redis-server package).
chaos: $(STAMP)
	$(BIN)/python -m scripts.chaos

# The operator console's browser tests (Playwright driving Debian's /usr/bin/chromium; `apt-get install
# chromium` when it is missing), which walk every page against a real server over Redis and save a
# screenshot per page under reports/console/.
console-shots: $(STAMP)
	JOURNEYREC_TEST_BROWSER=required $(BIN)/python -m pytest -q tests/service/test_console_browser.py
	@ls -1 reports/console/*.png

# README.md's generated regions: routes and scopes, settings, and the latest bench / eval figures
# (reports/*.json; kept as they are when absent). `make test` fails when routes or settings are stale.
readme: $(STAMP)
	$(BIN)/python -m scripts.readme

# ... and the example event and recommendation answer, from a real call against the demo model
readme-example: demo-model
	$(BIN)/python -m scripts.readme --examples $(DEMO)/models

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache reports
