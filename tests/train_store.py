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
    """A tiny run: 8 inputs, the tiny model with lookback 8, folds of 120/40/60 sessions (first fold only).
    `paths.raw` is the store's sibling `raw/`, where `small_store` generated the market (and its oracle)."""
    cfg = {
        "device": "cpu",
        "paths": {"raw": str(features.parent / "raw"), "features": str(features), "runs": str(runs)},
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


def first_losses(config_path: str | Path, steps: int) -> dict:
    """Losses of the first `steps` training steps of fold 0 on every visible device (a mesh over them),
    through the same compiled step, data placement and date order as `gogooku train`."""
    import jax
    import numpy as np

    from train.config import load_config, model_config
    from train.data import load_dataset
    from train.loop import epoch_order
    from train.splits import make_folds
    from train.step import (
        TrainState,
        by_date,
        compiled_train_step,
        make_mesh,
        params_init,
        replicated,
        schedule_array,
        to_mesh,
    )

    cfg = load_config(config_path)
    mesh = make_mesh(cfg.device)
    ds = load_dataset(cfg, sharding=replicated(mesh))
    mc = model_config(cfg, len(ds.input_names))
    fold = make_folds(len(ds.dates), cfg.train.folds, max_horizon=max(mc.horizons), first=mc.lookback - 1)[0]
    tx, step = compiled_train_step(mc, cfg.train.clip_norm, cfg.train.weight_decay, mesh)
    params = params_init(mc)(jax.random.key(0))
    state = TrainState(
        np.zeros((), np.int32), params, tx.init(params), jax.random.key_data(jax.random.key(1))
    )
    state = jax.tree.map(lambda a: to_mesh(np.asarray(a), replicated(mesh)), state)
    schedule = to_mesh(schedule_array(cfg.train, steps), replicated(mesh))
    order = epoch_order(fold.train, cfg.train.seed, 0, 0)
    b, losses = cfg.train.batch_dates, []
    for i in range(steps):
        d = to_mesh(order[i * b : (i + 1) * b].astype(np.int32), by_date(mesh))
        state, metrics = step(state, ds.arrays, d, d, schedule)
        losses.append(float(metrics["loss"]))
    return {"devices": mesh.size, "losses": losses}


def cli_error(args: list[str]) -> str:
    """Run `gogooku ARGS`, expect a user error: exit code 2 and one line starting "error:"; return it."""
    from typer.testing import CliRunner

    from train.cli import app

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]
