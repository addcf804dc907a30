"""A small generated feature store and run config shared by the tests/test_train_*.py modules.

Built once per test session (synthetic market: 40 codes, 2021-01-01..2022-06-30, then the ETL) under pytest's
base temp folder; later callers reuse it.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from etl.config import SynthConfig
from etl.pipeline import build_store
from etl.sources.synthetic import generate

INPUTS = [
    "returns_1d",
    "returns_5d",
    "returns_20d",
    "volatility_20d",
    "rsi_14",
    "turnover_rate",
    "peer_corr_mean",
    "graph_degree",
]


def small_store(base: Path) -> Path:
    """The feature store folder (built on the first call of the session)."""
    features = base / "train_store" / "features"
    if not (features / "catalog.json").is_file():
        raw = base / "train_store" / "raw"
        generate(SynthConfig(stocks=40, start="2021-01-01", end="2022-06-30", seed=0), raw)
        build_store(raw, features, device="cpu")
    return features


def run_config(features: Path, runs: Path, **train: object) -> dict:
    """A tiny run: 8 inputs, the tiny model with lookback 8, folds of 120/40/60 sessions (first fold only)."""
    cfg = {
        "device": "cpu",
        "paths": {"features": str(features), "runs": str(runs)},
        "data": {"inputs": INPUTS},
        "model": {"config": "tiny", "dropout": 0.1},
        "train": {
            "name": "run",
            "batch_dates": 4,
            "max_epochs": 4,
            "log_every": 1,
            "checkpoint_every": 4,
            "warmup_steps": 4,
            "folds": {"train_sessions": 120, "valid_sessions": 40, "test_sessions": 60, "max_folds": 1},
        },
    }
    cfg["train"].update(train)
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path
