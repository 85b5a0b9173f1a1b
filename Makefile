# Two commands matter: `make demo` (the main job, end to end) and `make test`.
# Both create their own virtual environment in .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo-workspace
TEST_WORKERS ?= 2

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	@# WeasyPrint subsets fonts 2-3x faster with HarfBuzz's subsetter; best effort, never fatal.
	@ldconfig -p 2>/dev/null | grep -q libharfbuzz-subset || { \
	  command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && apt-get install -y -qq libharfbuzz-subset0) >/dev/null 2>&1; } || \
	  echo "note: libharfbuzz-subset0 not installed; invoice PDFs render slower"
	@# The rendered invoices' text is read back with poppler's pdftotext; best effort.
	@command -v pdftotext >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && apt-get install -y -qq poppler-utils) >/dev/null 2>&1; } || \
	  echo "note: poppler-utils not installed; the tests reading invoice PDFs as text are skipped"
	@# The Fava billing pages are tested in Debian's chromium (skipped without it); best effort.
	@command -v chromium >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1; } || \
	  echo "note: chromium not installed; the Fava billing browser test is skipped"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/beanbill demo --workspace $(DEMO_DIR)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	@# The Tryton peer (trytond 8.0 in its own venv, a template database): built once, cached in .peers/
	$(BIN)/python -m tests.peers.tryton
	@# The Prism peer (HubSpot's API as our OpenAPI document describes it): installed once, cached in .peers/
	$(BIN)/python -m tests.peers.prism
	@# PostgreSQL for the shared-state tests (Debian's postgresql, installed once; a throwaway cluster per run)
	$(BIN)/python -m tests.peers.postgres
	@# Spark for the rating-on-Spark tests (Debian's openjdk-17-jre-headless, beanbill[spark] from PyPI)
	$(BIN)/python -m tests.peers.spark
	@# Two workers, each running a whole test file at a time (a file's peers and module
	@# fixtures start once). The schema tests run on their own: schemathesis makes their
	@# cases at collection, which pytest-xdist's workers do not share (they would not run).
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile --ignore=tests/test_api_schema.py
	$(BIN)/pytest -q tests/test_api_schema.py

bench: $(STAMP)
	$(BIN)/python bench/bench_rating.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) .peers
