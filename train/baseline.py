"""`gogooku baseline`: LightGBM on the run's folds, scored like the model into eval/<split>/lightgbm/.

The same folds, the same input columns and the same labels as ATFT-GAT-FAN: one row per universe stock and
date t with the model's inputs at t (the per-date robust z-scores of train/data.py, NaN passed to LightGBM as
missing; no lookback window), and the per-date rank-normalised target_{h}d as the label (rows without a
label weigh 0). One model per fold and horizon, trained on the fold's training dates; early stopping watches
the RankIC of the fold's validation dates only (as the model's), never a test row. All folds' training rows
are binned once, with `max_bin` histogram edges found on the first fold's training rows (no fold is binned on
values from after its training dates); each fold trains on its subset. Deterministic: fixed seed,
`deterministic=True`, column-wise histograms and the configured thread count give the same trees on a
rerun. The predictions go through the same scorer as the model (`train.evaluate.score_model`), and the mean
gain importance of each input per horizon goes to importance.csv (docs/evaluate.md).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import lightgbm as lgb
import numpy as np
import polars as pl
from rich.console import Console
from rich.progress import Progress

from etl.errors import GogookuError
from etl.files import write_atomic
from train.config import BaselineConfig, Config
from train.data import Dataset, load_dataset
from train.evaluate import FoldPrediction, make_grid, score_model, to_codes
from train.metrics import rank_ic
from train.runs import (
    check_split,
    open_run,
    record_stage,
    run_folds,
    split_dates,
    start_run_folder,
)
from train.splits import fold_records

METRIC = "valid_rank_ic"


def lightgbm_params(bc: BaselineConfig) -> dict[str, Any]:
    """LightGBM's parameters for the config: L2 regression on the rank labels, reproducible."""
    return {
        "objective": "regression",
        "learning_rate": bc.learning_rate,
        "num_leaves": bc.num_leaves,
        "min_data_in_leaf": bc.min_data_in_leaf,
        "feature_fraction": bc.feature_fraction,
        "bagging_fraction": bc.bagging_fraction,
        "bagging_freq": 1 if bc.bagging_fraction < 1 else 0,
        "max_bin": bc.max_bin,
        "seed": bc.seed,
        "data_random_seed": bc.seed,  # the bin sampler's; a Dataset does not pass `seed` on to it
        "deterministic": True,
        "force_col_wise": True,  # histograms per input: the inputs a tree does not sample cost nothing
        "num_threads": bc.num_threads or os.cpu_count() or 1,
        "metric": "None",  # early stopping uses the validation RankIC (`rank_ic_eval`) alone
        "verbosity": -1,
    }


@dataclass
class Rows:
    """The universe stocks of some dates as design-matrix rows: inputs at t, and where each row sits."""

    x_RF: np.ndarray  # float32, NaN = missing
    t_R: np.ndarray  # date index
    slot_R: np.ndarray  # slot on that date


def universe_index(mask_TN: np.ndarray, date_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(date index, slot) of the universe stocks of `date_idx` (ascending), in (date, slot) order."""
    pos, slot = np.nonzero(mask_TN[date_idx])
    return date_idx[pos], slot


def universe_rows(x_TNF: np.ndarray, mask_TN: np.ndarray, date_idx: np.ndarray) -> Rows:
    """Rows of the universe stocks of `date_idx` (ascending), in (date, slot) order."""
    t, slot = universe_index(mask_TN, date_idx)
    return Rows(x_TNF[t, slot], t, slot)


class PanelRows(lgb.Sequence):
    """Design-matrix rows read from the panel one batch at a time, so LightGBM bins the training rows
    without a float copy of them all (at full market with 328 inputs that copy alone is 11 GB)."""

    batch_size = 1 << 16

    def __init__(self, x_TNF: np.ndarray, t_R: np.ndarray, slot_R: np.ndarray):
        self.x_TNF, self.t_R, self.slot_R = x_TNF, t_R, slot_R

    def __len__(self) -> int:
        return self.t_R.size

    def __getitem__(self, idx: int | slice | list[int]) -> np.ndarray:
        """One row (float64, as LightGBM's bin sampler takes it) or a batch of rows (float32)."""
        x = self.x_TNF[self.t_R[idx], self.slot_R[idx]]
        return x.astype(np.float64) if x.ndim == 1 else x


def rank_ic_eval(rows: Rows, ret_TN: np.ndarray, mask_TN: np.ndarray):
    """LightGBM `feval`: the mean over dates of the RankIC between the predictions of `rows` and the raw
    forward return (`train.metrics.rank_ic`, as the model's early stopping); -1 while undefined."""
    dates = np.unique(rows.t_R)
    d_R = np.searchsorted(dates, rows.t_R)
    ret_DN, mask_DN = ret_TN[dates], mask_TN[dates]

    def feval(preds: np.ndarray, _data: lgb.Dataset) -> tuple[str, float, bool]:
        pred_DN = np.full(ret_DN.shape, np.nan, np.float32)
        pred_DN[d_R, rows.slot_R] = preds
        ic_D = np.asarray(rank_ic(pred_DN, ret_DN, mask_DN))
        ok = np.isfinite(ic_D)
        return METRIC, float(ic_D[ok].mean()) if ok.any() else -1.0, True

    return feval


@dataclass
class Binned:
    """Every fold's training rows, binned once into LightGBM's histogram form; row r is the universe stock in
    slot `slot_R[r]` on date `t_R[r]`."""

    t_R: np.ndarray
    slot_R: np.ndarray
    data: lgb.Dataset

    def rows_of(self, date_idx: np.ndarray) -> np.ndarray:
        """Positions of the binned rows on `date_idx` (a fold's training dates), ascending."""
        return np.flatnonzero(np.isin(self.t_R, date_idx))


def bin_training_rows(
    x_TNF: np.ndarray, mask_TN: np.ndarray, folds: list, params: dict[str, Any], names: list[str]
) -> Binned:
    """The universe rows of every fold's training dates as one binned LightGBM dataset. The bin edges
    (`max_bin` per input) are found on the first fold's training rows alone, so no fold is binned on values
    from after its own training dates; each fold then trains on a subset (`fit_fold`). Rows are read from
    the panel in batches (`PanelRows`): the binned form, one byte per input and row, is all that is held."""
    t_R, slot_R = universe_index(mask_TN, np.unique(np.concatenate([f.train for f in folds])))
    first = np.isin(t_R, folds[0].train)
    edges = lgb.Dataset(
        PanelRows(x_TNF, t_R[first], slot_R[first]),
        label=np.zeros(int(first.sum())),
        feature_name=names,
        params=params,
    ).construct()
    n = t_R.size  # labels and weights are set per fold and horizon
    data = lgb.Dataset(
        PanelRows(x_TNF, t_R, slot_R),
        label=np.zeros(n),
        weight=np.ones(n, np.float32),
        feature_name=names,
        params=params,
        reference=edges,
    ).construct()
    return Binned(t_R, slot_R, data)


def fit_fold(
    binned: Binned,
    train_idx: np.ndarray,
    valid: Rows,
    ds: Dataset,
    bc: BaselineConfig,
    on_horizon: Any = None,
) -> list[lgb.Booster]:
    """One booster per horizon on the binned rows `train_idx`, early-stopped on the validation rows' RankIC.
    The fold's subset is cut once and relabelled per horizon (rows without a label weigh 0)."""
    params = lightgbm_params(bc)
    whole = train_idx.size == binned.t_R.size  # the last expanding fold: no second copy of the bins
    train_set = binned.data if whole else binned.data.subset(train_idx).construct()
    t_R, slot_R = binned.t_R[train_idx], binned.slot_R[train_idx]
    valid_set = lgb.Dataset(  # keeping the raw rows costs nothing: `valid` holds them
        valid.x_RF, label=np.zeros(valid.t_R.size), reference=binned.data, free_raw_data=False
    )
    boosters = []
    for k in range(len(ds.horizons)):
        train_set.set_label(ds.y_TNH[t_R, slot_R, k])
        train_set.set_weight(ds.y_mask_TNH[t_R, slot_R, k].astype(np.float32))
        booster = lgb.train(
            params,
            train_set,
            num_boost_round=bc.num_boost_round,
            valid_sets=[valid_set],
            valid_names=["valid"],
            feval=rank_ic_eval(valid, ds.ret_TNH[..., k], ds.stock_mask_TN),
            callbacks=[lgb.early_stopping(bc.early_stopping_rounds, first_metric_only=True, verbose=False)],
        )
        boosters.append(booster)
        if on_horizon is not None:
            on_horizon()
    return boosters


def _run_folder(cfg: Config, ds: Dataset, folds_json: list) -> Path:
    """The run folder of the config: checked against its run if one is there, started otherwise."""
    run_dir = Path(cfg.paths.runs) / cfg.train.name
    if (run_dir / "config.yaml").is_file():
        run = open_run(run_dir)
        if run.inputs["input_hash"] != ds.input_hash or run.folds_json != folds_json:
            raise GogookuError(
                f"{run_dir} holds a run with other inputs or folds than this config: use the run's config "
                f"({run_dir / 'config.yaml'}) or another train.name"
            )
        if tuple(run.cfg.model.horizons) != ds.horizons:
            raise GogookuError(f"{run_dir} holds a run with horizons {list(run.cfg.model.horizons)}")
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise GogookuError(f"{run_dir} exists and is not a run folder (no config.yaml): choose train.name")
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        start_run_folder(run_dir, cfg, ds.inputs_record(), folds_json)
    return run_dir


def run_baseline(cfg: Config, split: str = "test", *, console: Console | None = None) -> dict[str, Any]:
    """Train and score the LightGBM baseline on every fold of `cfg` into paths.runs/train.name; returns
    the metrics.json object of eval/<split>/lightgbm/."""
    started = time.perf_counter()
    console = console or Console(stderr=True)
    check_split(split)
    bc = cfg.baseline
    cpu = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("baseline: load the feature store", total=None)
        ds = load_dataset(
            cfg,
            dtype=jnp.float32,
            sharding=cpu,
            progress=lambda stage, done, total: bar.update(task, completed=done, total=total),
        )
        cfg = replace(cfg, model=replace(cfg.model, n_features=len(ds.input_names)))
        folds = run_folds(cfg, len(ds.dates))
        run_dir = _run_folder(cfg, ds, fold_records(folds, ds.dates))
        x_TNF = np.asarray(ds.arrays.x_TNF)  # the scaled inputs on the host (a view: the device is the CPU)
        names = list(ds.input_names)
        h_n = len(ds.horizons)
        bar.update(task, description="baseline: LightGBM", completed=0, total=len(folds) * h_n)
        params = lightgbm_params(bc)
        binned = bin_training_rows(x_TNF, ds.stock_mask_TN, folds, params, names)
        preds, gains, stopped = [], [], []
        for fold in folds:
            train_idx = binned.rows_of(fold.train)
            valid = universe_rows(x_TNF, ds.stock_mask_TN, fold.valid)
            boosters = fit_fold(binned, train_idx, valid, ds, bc, lambda: bar.update(task, advance=1))
            for h, booster in zip(ds.horizons, boosters, strict=True):
                if not booster.feature_importance("split", iteration=booster.best_iteration).any():
                    console.print(
                        f"[yellow]warning:[/] LightGBM fold {fold.index}, {h}d: no tree split its rows "
                        f"(baseline.min_data_in_leaf = {bc.min_data_in_leaf} too large for "
                        f"{train_idx.size} rows?): one constant prediction, no RankIC",
                        highlight=False,
                    )
            date_idx = split_dates(fold, split)
            rows = universe_rows(x_TNF, ds.stock_mask_TN, date_idx)
            pred_DNH = np.full((date_idx.size, ds.n_pad, h_n), np.nan, np.float32)
            d_R = np.searchsorted(date_idx, rows.t_R)
            for k, booster in enumerate(boosters):
                pred_DNH[d_R, rows.slot_R, k] = booster.predict(
                    rows.x_RF, num_iteration=booster.best_iteration
                )
                gains.append(booster.feature_importance("gain", iteration=booster.best_iteration))
            preds.append(FoldPrediction(fold.index, date_idx, to_codes(ds, pred_DNH, date_idx)))
            stopped.append(
                {
                    "fold": fold.index,
                    "best_iteration": {
                        f"{h}d": b.best_iteration for h, b in zip(ds.horizons, boosters, strict=True)
                    },
                    METRIC: {
                        f"{h}d": b.best_score["valid"][METRIC]
                        for h, b in zip(ds.horizons, boosters, strict=True)
                    },
                }
            )
        bar.update(task, description="baseline: score", completed=0, total=None)
        extra = {"lightgbm": {"version": lgb.__version__, "params": params, "folds": stopped}}
        metrics = score_model(
            run_dir, make_grid(ds), "lightgbm", split, preds, config=cfg.eval, seed=bc.seed, extra=extra
        )
    gain_HF = np.mean(np.reshape(gains, (len(folds), h_n, len(names))), axis=0)
    importance = pl.DataFrame(
        {
            "input": names * h_n,
            "horizon": np.repeat(np.asarray(ds.horizons, np.int32), len(names)),
            "gain": gain_HF.reshape(-1),
        }
    ).sort(["horizon", "gain"], descending=[False, True])
    write_atomic(run_dir / "eval" / split / "lightgbm" / "importance.csv", importance.write_csv())
    stage = "baseline" if split == "test" else f"baseline_{split}"
    record_stage(run_dir, stage, time.perf_counter() - started, f"cpu ({params['num_threads']} threads)")
    return metrics
