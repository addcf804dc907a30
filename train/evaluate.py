"""`gogooku evaluate`: a run's models scored on the test (or validation) segments of its folds.

For every fold, the best checkpoint is restored from the run folder alone (on any machine: a GPU-trained
checkpoint restores on a CPU) and one jitted function predicts the fold's dates and the VSN's selection
weights. Beside the model, two reference signals are scored on the same dates and stocks: the synthetic
market's oracle (where the raw store has `oracle.parquet`) and the 5-day reversal (minus the store's
`returns_5d`). All of them go through `score_model`, which writes eval/<split>/<model>/ (docs/evaluate.md).

The comparison is fair by construction: every model is scored by `train.metrics.score` on the same stock
axis (the store's codes), the same dates and the same `mask_DNH` (each date's universe as training defines
it, train/data.py); a model without a prediction for a stock (NaN) simply has no signal there.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import polars as pl
from rich.console import Console
from rich.progress import Progress

from etl.errors import GogookuError
from etl.files import write_atomic
from etl.store.feature_store import scan
from model.atft_gat_fan import ATFTGATFAN
from model.config import ModelConfig
from train import checkpoint
from train.config import Config, MetricsConfig, model_config
from train.data import Arrays, Dataset, gather_batch, load_dataset
from train.metrics import Scores, score, select_dates, summarise
from train.runs import RunFolder, check_split, check_store, device_name, open_run, record_stage, split_dates
from train.splits import Fold
from train.step import batches

ORACLE_FILE = "oracle.parquet"  # the synthetic market's expected returns (docs/synthetic.md)
REVERSAL_COLUMN = "returns_5d"  # C_t / C_{t-5} - 1; the reversal signal is minus this
DAILY_COLUMNS = {  # daily.parquet column -> (Scores.per_date section, key)
    "ic": ("signal", "ic"),
    "rank_ic": ("signal", "rank_ic"),
    "hit_rate": ("signal", "hit_rate"),
    "spread": ("signal", "spread"),
    "ls_gross": ("long_short", "gross"),
    "ls_net": ("long_short", "net"),
    "ls_turnover": ("long_short", "turnover"),
    "topk_gross": ("top_k", "gross"),
    "topk_net": ("top_k", "net"),
    "topk_excess": ("top_k", "excess"),
    "topk_turnover": ("top_k", "turnover"),
    "jpx_spread": ("jpx", "spread"),
}


def quantile_name(q: float) -> str:
    """A quantile level as its column prefix: 0.1 -> 'q10', 0.25 -> 'q25'."""
    return f"q{round(q * 100)}"


# --- the store on the scorer's stock axis ---


@dataclass
class Grid:
    """The store as the scorer sees it: T dates x G codes (a fixed stock axis, which portfolios need; the
    model's slot axis changes meaning from date to date). Built once, shared by every model."""

    ds: Dataset
    mask_TG: np.ndarray  # bool: in the date's universe (train/data.py)
    ret_TGH: np.ndarray  # raw target_{h}d, NaN outside the universe
    daily_ret_TG: np.ndarray  # target_1d of every store row: what a held stock earns the next session
    topix_T: np.ndarray  # TOPIX's return from the close of t to the close of t + 1 (mkt_ret_1d of t + 1)
    columns_TG: dict[str, np.ndarray]  # other store columns read on the grid (returns_5d)


def to_codes(ds: Dataset, x_DN: np.ndarray, date_idx: np.ndarray, fill: Any = np.nan) -> np.ndarray:
    """Slot-axis values [D, Npad, ...] of dates `date_idx` on the code axis [D, G, ...] (`fill` elsewhere)."""
    code_DN = ds.code_TN[date_idx]
    d, n = np.nonzero(code_DN >= 0)
    out = np.full((len(date_idx), len(ds.codes), *x_DN.shape[2:]), fill, dtype=x_DN.dtype)
    out[d, code_DN[d, n]] = x_DN[d, n]
    return out


def store_on_grid(ds: Dataset, columns: list[str]) -> dict[str, np.ndarray]:
    """Store columns as float32 [T, G] panels (NaN where the store has no row or no value)."""
    frame = scan(ds.features_dir).select(["Date", "Code", *columns]).collect()
    day = ds.dates.astype("datetime64[D]").astype(np.int64)
    t = np.searchsorted(day, frame["Date"].cast(pl.Int32).to_numpy())
    g = np.searchsorted(ds.codes, frame["Code"].to_numpy().astype(str))
    out = {}
    for name in columns:
        panel = np.full((len(ds.dates), len(ds.codes)), np.nan, np.float32)
        panel[t, g] = frame[name].cast(pl.Float32).fill_null(np.nan).to_numpy()
        out[name] = panel
    return out


def make_grid(ds: Dataset, extra_columns: tuple[str, ...] = ()) -> Grid:
    every = np.arange(len(ds.dates))
    store = store_on_grid(ds, ["target_1d", "mkt_ret_1d", *extra_columns])
    market_TG = store["mkt_ret_1d"]  # the same value on every row of a date
    market_T = market_TG[every, np.argmax(np.isfinite(market_TG), axis=1)]  # NaN where no row has one
    topix_T = np.concatenate([market_T[1:], [np.nan]]).astype(np.float32)
    return Grid(
        ds=ds,
        mask_TG=to_codes(ds, ds.stock_mask_TN, every, fill=False),
        ret_TGH=to_codes(ds, ds.ret_TNH, every),
        daily_ret_TG=store["target_1d"],
        topix_T=topix_T,
        columns_TG={name: store[name] for name in extra_columns},
    )


# --- one model's predictions on a split, scored and written ---


@dataclass
class FoldPrediction:
    """One fold's predictions on its segment of the split: contiguous ascending dates, values on the code
    axis (NaN = no signal); the model's quantiles where it has them."""

    fold: int
    date_idx: np.ndarray  # [D]
    pred_DGH: np.ndarray  # float32
    quantiles_DGHQ: np.ndarray | None = None


def score_dates(grid: Grid, date_idx: np.ndarray, pred_DGH: np.ndarray, config: MetricsConfig) -> Scores:
    """`train.metrics.score` of predictions on the contiguous dates `date_idx`, on the universe mask; the
    daily and TOPIX returns run max(lag, 1) sessions past the last date (NaN past the store's end)."""
    extra = max(config.lag, 1)
    rows = np.arange(date_idx[0], date_idx[-1] + 1 + extra)
    inside = rows < len(grid.ds.dates)
    daily_TG = np.full((rows.size, grid.mask_TG.shape[1]), np.nan, np.float32)
    daily_TG[inside] = grid.daily_ret_TG[rows[inside]]
    topix_T = np.full(rows.size, np.nan, np.float32)
    topix_T[inside] = grid.topix_T[rows[inside]]
    mask_DGH = np.broadcast_to(grid.mask_TG[date_idx][..., None], pred_DGH.shape)
    return score(pred_DGH, grid.ret_TGH[date_idx], mask_DGH, daily_TG, topix_T, config=config)


def _split_sequence(preds: list[FoldPrediction], shape_GH: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """The split as one date sequence: every session from the first to the last of the folds' segments.
    Where segments overlap (validation segments longer than the test step) the later fold, trained on more
    data, counts; sessions between segments (shorter validation segments) have no prediction and belong to
    no fold. Returns (dates, fold per date or -1, predictions)."""
    first = min(int(p.date_idx[0]) for p in preds)
    last = max(int(p.date_idx[-1]) for p in preds)
    dates = np.arange(first, last + 1)
    fold_D = np.full(dates.size, -1)
    pred_DGH = np.full((dates.size, *shape_GH), np.nan, np.float32)
    for p in sorted(preds, key=lambda p: p.fold):
        fold_D[p.date_idx - first] = p.fold
        pred_DGH[p.date_idx - first] = p.pred_DGH
    return dates, fold_D, pred_DGH


def _daily_frame(grid: Grid, scores: Scores, dates: np.ndarray, fold_D: np.ndarray, horizons) -> pl.DataFrame:
    """daily.parquet: one row per date of the split and horizon, from Scores.per_date."""
    per_date = jax.device_get(scores.per_date)
    keep = np.flatnonzero(fold_D >= 0)
    parts = []
    for k, h in enumerate(horizons):
        cols = {"Date": grid.ds.dates[dates[keep]], "fold": fold_D[keep], "horizon": np.full(keep.size, h)}
        for name, (section, key) in DAILY_COLUMNS.items():
            cols[name] = np.asarray(per_date[section][key], np.float64)[keep, k]
        cols["topix"] = np.asarray(per_date["topix"], np.float64)[keep]
        parts.append(pl.DataFrame(cols))
    frame = pl.concat(parts).with_columns(
        pl.col("Date").cast(pl.Date), pl.col("fold").cast(pl.Int32), pl.col("horizon").cast(pl.Int32)
    )
    return frame.with_columns(pl.col(pl.Float64).fill_nan(None)).sort("Date", "horizon")


def _predictions_frame(
    grid: Grid, preds: list[FoldPrediction], horizons, quantiles: tuple[float, ...] | None
) -> pl.DataFrame:
    """predictions.parquet: Date, Code, fold, pred_{h}d (and the quantiles) of every universe stock."""
    parts = []
    for p in preds:
        d, g = np.nonzero(grid.mask_TG[p.date_idx])
        cols: dict[str, Any] = {
            "Date": grid.ds.dates[p.date_idx[d]],
            "Code": grid.ds.codes[g],
            "fold": np.full(d.size, p.fold, np.int32),
        }
        for k, h in enumerate(horizons):
            cols[f"pred_{h}d"] = p.pred_DGH[d, g, k]
        if quantiles is not None and p.quantiles_DGHQ is not None:
            for k, h in enumerate(horizons):
                for j, q in enumerate(quantiles):
                    cols[f"{quantile_name(q)}_{h}d"] = p.quantiles_DGHQ[d, g, k, j]
        parts.append(pl.DataFrame(cols))
    frame = pl.concat(parts).with_columns(pl.col("Date").cast(pl.Date))
    return frame.with_columns(pl.col(pl.Float32).fill_nan(None))


def _write_parquet(path: Path, frame: pl.DataFrame) -> None:
    write_atomic(path, lambda fh: frame.write_parquet(fh, compression="zstd", statistics=True))


def score_model(
    run_dir: Path,
    grid: Grid,
    model: str,
    split: str,
    preds: list[FoldPrediction],
    *,
    config: MetricsConfig,
    seed: int | None,
    quantiles: tuple[float, ...] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score one model's predictions on a split and write eval/<split>/<model>/: predictions.parquet,
    daily.parquet and metrics.json (the run-folder contract). Returns the metrics.json object."""
    horizons = grid.ds.horizons
    shape_GH = (len(grid.ds.codes), len(horizons))
    dates, fold_D, pred_DGH = _split_sequence(preds, shape_GH)
    if config.lag >= dates.size:
        raise GogookuError(
            f"eval.lag = {config.lag} sessions: the {split} split spans {dates.size}, so no portfolio trades"
        )
    scores = select_dates(score_dates(grid, dates, pred_DGH, config), fold_D >= 0)
    most = int(np.max(scores.per_date["signal"]["n_stocks"], initial=0))
    if most < config.min_stocks:
        raise GogookuError(
            f"{model}, {split} split: at most {most} stocks a date have both a prediction and a return, "
            f"fewer than eval.min_stocks ({config.min_stocks}); nothing to score"
        )
    overall = summarise(scores, horizons, config)
    folds = []
    for p in preds:  # a fold's figures: its dates' share of the split's sequence
        summary = summarise(select_dates(scores, fold_D == p.fold), horizons, config)
        own = dates[fold_D == p.fold]
        span = [str(grid.ds.dates[own[0]]), str(grid.ds.dates[own[-1]]), int(own.size)] if own.size else []
        folds.append({"fold": p.fold, "dates": span, **summary})
    metrics = {
        "model": model,
        "split": split,
        "horizons": list(horizons),
        "seed": seed,
        "dates": [str(grid.ds.dates[dates[0]]), str(grid.ds.dates[dates[-1]]), int((fold_D >= 0).sum())],
        "overall": overall,
        "folds": folds,
        "deciles": {f"{h}d": overall["horizons"][f"{h}d"]["signal"]["decile_mean"] for h in horizons},
        **(extra or {}),
    }
    out = run_dir / "eval" / split / model
    out.mkdir(parents=True, exist_ok=True)
    _write_parquet(out / "predictions.parquet", _predictions_frame(grid, preds, horizons, quantiles))
    _write_parquet(out / "daily.parquet", _daily_frame(grid, scores, dates, fold_D, horizons))
    write_atomic(out / "metrics.json", json.dumps(metrics, indent=1))
    return metrics


# --- the model ---


@functools.partial(jax.jit, static_argnames="cfg")
def predict_with_selection(
    params: Any, arrays: Arrays, date_idx_B: jax.Array, *, cfg: ModelConfig
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Quantiles [B, Npad, H, Q] of dates `date_idx_B` (as `train.step.predict_step`) plus the VSN's
    selection weights summed over each date's universe stocks [B, F] and their count [B].

    The weights are the model's sown `variable_weights_BNF` (the softmax over inputs, averaged over the
    lookback window); used by evaluation only, training never collects them."""
    batch = gather_batch(arrays, date_idx_B, cfg.lookback)
    q_BNHQ, state = ATFTGATFAN(cfg).apply(params, batch, mutable=["intermediates"])
    w_BNF = state["intermediates"]["variable_weights_BNF"][0]
    mask_BN = batch.stock_mask_BN
    w_sum_BF = jnp.where(mask_BN[..., None], w_BNF, 0.0).sum(1)
    return q_BNHQ, w_sum_BF, mask_BN.sum(1)


def predict_fold(
    run: RunFolder, ds: Dataset, model_cfg: ModelConfig, fold: Fold, split: str
) -> tuple[FoldPrediction, np.ndarray, int]:
    """Restore the fold's best checkpoint and predict its split dates: (prediction, VSN weight sums [F],
    number of stock-dates summed)."""
    fold_dir = run.fold_dir(fold.index)
    if not (fold_dir / "best").is_dir():
        raise GogookuError(
            f"{fold_dir}: no best checkpoint (the fold has not finished a validation): finish training with "
            f"`gogooku train --resume {run.path}`"
        )
    params, meta = checkpoint.restore_params(fold_dir, "best")
    checkpoint.check_compatible(meta, ds.input_hash, len(ds.input_names), model_cfg, str(fold_dir / "best"))
    date_idx = split_dates(fold, split)
    q_parts, w_sum_F, count = [], np.zeros(len(ds.input_names)), 0
    for idx, n in batches(date_idx, run.cfg.train.batch_dates):
        q_BNHQ, w_BF, n_B = predict_with_selection(params, ds.arrays, idx.astype(np.int32), cfg=model_cfg)
        q_parts.append(np.asarray(q_BNHQ, np.float32)[:n])
        w_sum_F += np.asarray(w_BF, np.float64)[:n].sum(0)
        count += int(np.asarray(n_B)[:n].sum())
    q_DNHQ = np.concatenate(q_parts)
    q_DNHQ = np.where(ds.stock_mask_TN[date_idx][:, :, None, None], q_DNHQ, np.nan)
    q_DGHQ = to_codes(ds, q_DNHQ, date_idx)
    pred = FoldPrediction(fold.index, date_idx, q_DGHQ[..., model_cfg.median_index], q_DGHQ)
    return pred, w_sum_F, count


# --- the reference signals ---


def oracle_on_grid(path: Path, ds: Dataset) -> np.ndarray:
    """The oracle's expected_return_{h}d on the store's grid, [T, G, H] float32 (NaN where it has no row;
    its rows off the store's dates or codes are left out)."""
    frame = pl.read_parquet(path)
    missing = [f"expected_return_{h}d" for h in ds.horizons if f"expected_return_{h}d" not in frame.columns]
    if missing or not {"Date", "Code"} <= set(frame.columns):
        raise GogookuError(f"{path}: lacks {', '.join(missing) or 'Date/Code'} for the run's horizons")
    day = ds.dates.astype("datetime64[D]").astype(np.int64)
    d = frame["Date"].cast(pl.Int32).to_numpy()
    codes = frame["Code"].to_numpy().astype(str)
    t = np.minimum(np.searchsorted(day, d), day.size - 1)
    g = np.minimum(np.searchsorted(ds.codes, codes), ds.codes.size - 1)
    on_grid = (day[t] == d) & (ds.codes[g] == codes)
    out = np.full((day.size, ds.codes.size, len(ds.horizons)), np.nan, np.float32)
    for k, h in enumerate(ds.horizons):
        values = frame[f"expected_return_{h}d"].cast(pl.Float32).fill_null(np.nan).to_numpy()
        out[t[on_grid], g[on_grid], k] = values[on_grid]
    return out


def reference_predictions(grid: Grid, values_TGH: np.ndarray, folds: list[Fold], split: str) -> list:
    """A signal known on the whole grid, cut to each fold's split dates."""
    return [FoldPrediction(f.index, split_dates(f, split), values_TGH[split_dates(f, split)]) for f in folds]


def reversal_on_grid(grid: Grid) -> np.ndarray:
    """The 5-day reversal: minus the store's returns_5d (C_t / C_{t-5} - 1) at t, the same for every horizon
    (a higher score = a higher expected return, as for every model)."""
    reversal_TG = -grid.columns_TG[REVERSAL_COLUMN]
    return np.repeat(reversal_TG[..., None], len(grid.ds.horizons), axis=-1)


# --- the command ---


def _vsn_frame(names: tuple[str, ...], w_sum_F: np.ndarray, count: int) -> pl.DataFrame:
    weight = w_sum_F / max(count, 1)
    return pl.DataFrame({"input": list(names), "weight": weight}).sort("weight", descending=True)


def evaluate_run(
    run_dir: str | Path,
    split: str = "test",
    *,
    overrides: list[str] | None = None,
    console: Console | None = None,
) -> dict[str, dict[str, Any]]:
    """Evaluate a run folder on `split`: ATFT-GAT-FAN from each fold's best checkpoint, the oracle (where the
    raw store has one) and the 5-day reversal; writes eval/<split>/<model>/ and the stages.json entry.
    Returns {model: metrics.json object}."""
    started = time.perf_counter()
    console = console or Console(stderr=True)
    run = open_run(run_dir, overrides)
    check_split(split)
    cfg: Config = run.cfg
    if not jax.config.jax_compilation_cache_dir:  # as `gogooku train`: a rerun skips XLA
        jax.config.update("jax_compilation_cache_dir", str(Path(cfg.paths.runs).absolute() / ".jax_cache"))
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("evaluate: load the feature store", total=None)
        ds = load_dataset(
            cfg, progress=lambda stage, done, total: bar.update(task, completed=done, total=total)
        )
        folds = check_store(run, ds.input_hash, ds.dates)
        model_cfg = model_config(cfg, n_features=len(ds.input_names))
        grid = make_grid(ds, (REVERSAL_COLUMN,))
        bar.update(task, description="evaluate: predict the folds", completed=0, total=len(folds))
        preds, w_sum_F, count = [], np.zeros(len(ds.input_names)), 0
        for fold in folds:
            pred, w_F, n = predict_fold(run, ds, model_cfg, fold, split)
            preds.append(pred)
            w_sum_F, count = w_sum_F + w_F, count + n
            bar.update(task, advance=1)
        results = {}
        bar.update(task, description="evaluate: score atft", completed=0, total=None)
        results["atft"] = score_model(
            run.path,
            grid,
            "atft",
            split,
            preds,
            config=cfg.eval,
            seed=cfg.train.seed,
            quantiles=model_cfg.quantiles,
        )
        write_atomic(
            run.eval_dir(split, "atft") / "vsn_weights.csv",
            _vsn_frame(ds.input_names, w_sum_F, count).write_csv(),
        )
        oracle = Path(cfg.paths.raw) / ORACLE_FILE
        if oracle.is_file():
            bar.update(task, description="evaluate: score the oracle")
            results["oracle"] = score_model(
                run.path,
                grid,
                "oracle",
                split,
                reference_predictions(grid, oracle_on_grid(oracle, ds), folds, split),
                config=cfg.eval,
                seed=None,
                extra={"source": str(oracle)},
            )
        else:
            console.print(
                f"evaluate: no {oracle} (a synthetic market's oracle): oracle not scored", highlight=False
            )
        bar.update(task, description="evaluate: score the 5-day reversal")
        results["reversal_5d"] = score_model(
            run.path,
            grid,
            "reversal_5d",
            split,
            reference_predictions(grid, reversal_on_grid(grid), folds, split),
            config=cfg.eval,
            seed=None,
            extra={"signal": f"minus {REVERSAL_COLUMN} (C_t / C_(t-5) - 1) at t, for every horizon"},
        )
    stage = "evaluate" if split == "test" else f"evaluate_{split}"
    record_stage(run.path, stage, time.perf_counter() - started, device_name(jax.devices()[0]))
    return results
