# Two commands: `make demo` (the main job on the built-in synthetic market) and `make test`.
# Each creates .venv from the committed lock file first; that is a no-op when nothing changed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
CONFIG ?= configs/demo.yaml
# the run folder of CONFIG (paths.runs/train.name)
RUN ?= runs/demo
STAMP := $(VENV)/.installed

# Every target is phony: `train` and `bench` are also folder names, which make would take as up to date.
.PHONY: setup test lint format pytest demo etl etl-gpu train evaluate baseline report ablate bench bench-gpu clean

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	$(BIN)/uv pip sync --quiet --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	@touch $(STAMP)

lint: setup
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

pytest: setup
	$(BIN)/python -m pytest -q

test: lint pytest

# The whole product on the synthetic market: data, features, LightGBM, ATFT-GAT-FAN, scores, report.
demo: setup
	$(BIN)/gogooku synth --config $(CONFIG)
	$(BIN)/gogooku etl --config $(CONFIG)
	$(BIN)/gogooku train --config $(CONFIG) --overwrite
	$(BIN)/gogooku baseline --config $(CONFIG)
	$(BIN)/gogooku evaluate --run $(RUN)
	$(BIN)/gogooku report --run $(RUN)

# Walk-forward training on the feature store (docs/train.md); a rerun replaces the run of the same train.name.
train: setup
	$(BIN)/gogooku train --config $(CONFIG) --overwrite

baseline: setup
	$(BIN)/gogooku baseline --config $(CONFIG)

evaluate: setup
	$(BIN)/gogooku evaluate --run $(RUN)

report: setup
	$(BIN)/gogooku report --run $(RUN)

etl: setup
	$(BIN)/gogooku etl --config $(CONFIG)

etl-gpu: setup
	$(BIN)/gogooku etl --config $(CONFIG) --device gpu

# What each part of the model adds: full, no_gat, no_fan, shuffled_graph x 3 seeds (docs/train.md);
# rerunning it skips the pairs already evaluated.
ablate: setup
	$(BIN)/gogooku ablate --config $(CONFIG)

# CPU benchmarks at full market scale (tens of minutes); results go in docs/benchmarks.md.
bench: setup
	$(BIN)/python bench/synth.py
	$(BIN)/python bench/fetch.py
	$(BIN)/python bench/graph.py
	$(BIN)/python bench/model.py --config tiny
	$(BIN)/python bench/etl_events.py
	$(BIN)/python bench/metrics.py
	$(BIN)/python bench/baseline.py
	$(BIN)/gogooku synth --stocks 4000 --start 2014-01-01 --end 2023-12-31 --seed 0 --out data/bench/raw
	$(BIN)/python bench/etl.py --raw data/bench/raw --out data/bench/features

# On a machine with a CUDA GPU and the gpu extra: GPU tests and benchmarks in one go (results under gpu_out/).
bench-gpu: setup
	PY=$(BIN)/python bash bench/gpu_check.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
