# Two commands for a fresh machine: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: browser install run run-ocr test lint format bench bench-ocr bench-training bench-memory bench-worker-memory bench-documents bench-ocr-client bench-pages bench-api bench-ocr-start bench-backend-overhead bench-learning-loop bench-search bench-ui clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[backend,ocr,dev]'
	@touch $(STAMP)

install: $(STAMP)

# Starts the whole system on loopback with the embedded defaults: the OCR service
# (127.0.0.1:8001, models in ./data/models, its log in ./data/ocr_service.log) in the
# background and the backend (127.0.0.1:8000, SQLite and originals under ./data) in front.
# Ctrl-C stops both (a background job ignores Ctrl-C, so the trap ends it). Training is on:
# both get one token — OCR_TRAINING_TOKEN if set (set empty: training off), else a random
# one made once and kept, readable by this user only, in ./data/training-token.
run: install
	@mkdir -p data/models
	@test -s data/training-token || (umask 077 && $(PY) -c 'import secrets; print(secrets.token_urlsafe(32))' >data/training-token)
	@token=$${OCR_TRAINING_TOKEN-$$(cat data/training-token)}; \
	OCR_TRAINING_TOKEN=$$token OCR_MODELS_DIR=$${OCR_MODELS_DIR:-$(CURDIR)/data/models} $(PY) -m ocr_service >data/ocr_service.log 2>&1 & ocr=$$!; \
	trap 'kill $$ocr 2>/dev/null; wait $$ocr 2>/dev/null' EXIT INT TERM; \
	APP_OCR_TRAINING_TOKEN=$$token $(PY) -m backend

# The OCR service alone, in front.
run-ocr: install
	@mkdir -p data/models
	OCR_MODELS_DIR=$${OCR_MODELS_DIR:-$(CURDIR)/data/models} $(PY) -m ocr_service

# The browser tests drive Debian's Chromium (never a browser downloaded by Playwright): installed
# here when missing and we may (root), else the test run stops saying what to install.
CHROMIUM := /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    apt-get install -y -q chromium >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; \
	  else \
	    echo "missing: $(CHROMIUM) for the browser tests. Install it with: sudo apt-get install -y chromium" >&2; exit 1; \
	  fi; }
	@test -x $(CHROMIUM) || { echo "missing: $(CHROMIUM) (apt-get install -y chromium failed)" >&2; exit 1; }

# Two test processes (pytest-xdist), each taking whole files (module-scoped servers start once):
# most tests wait on subprocesses, sockets and kraken, so one process kept two cores about 65 %
# busy. TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 2

test: install browser
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

format: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

bench: bench-ocr

bench-ocr: install
	$(PY) bench/bench_ocr.py

# The service process's peak memory with a full queue of A4-300-dpi PDFs, and the time until
# the places are free after clients hang up.
bench-memory: install
	$(PY) bench/bench_memory.py

# One worker's peak memory by the page's width at blla's height, against its reservation.
bench-worker-memory: install
	$(PY) bench/bench_worker_memory.py

# How long refusing hostile documents takes (a 50 000-frame TIFF, a TIFF of huge IFDs).
bench-documents: install
	$(PY) bench/bench_documents.py

# The backend's OCR client: starting a call with the breaker open vs the service down.
bench-ocr-client: install
	$(PY) bench/bench_ocr_client.py

# The backend's first view of a page: rendering its display image and thumbnail.
bench-pages: install
	$(PY) bench/bench_pages.py

# The backend's API at 50 concurrent clients over 2 000 documents x 100 lines, on SQLite and PostgreSQL.
bench-api: install
	$(PY) bench/bench_api.py --database sqlite
	$(PY) bench/bench_api.py --database postgresql

# Full-text search over 1 000 000 lines of generated letters, 20 searches in flight (target p99 < 100 ms).
# The loaded archives are kept under .cache/bench-search/ (PostgreSQL: databases bench_search_*).
bench-search: install
	$(PY) bench/bench_search.py --database sqlite
	$(PY) bench/bench_search.py --database sqlite --search-processes 2
	$(PY) bench/bench_search.py --database postgresql
	$(PY) bench/bench_search.py --database postgresql --search-processes 2

# The document view of a 60-line page in Chromium: navigation to every line editable (target < 1 s), CSS+JS bytes.
bench-ui: install
	$(PY) bench/bench_ui.py

# Starting OCR through the backend's API: breaker open vs the OCR service down, breaker closed.
bench-ocr-start: install
	$(PY) bench/bench_ocr_start.py

# A 6-page document through the backend (upload, job, lines stored) vs straight through /ocr/stream.
bench-backend-overhead: install
	$(PY) bench/bench_backend_overhead.py

# Peak RSS and seconds per epoch of recognition and segmentation (800 px) training.
bench-training: install
	$(PY) bench/bench_training.py

# The learning loop through the backend: a writer model's CER vs the base's on held-out pages (target ≤ 0.1x).
bench-learning-loop: install
	$(PY) bench/bench_learning_loop.py

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
