"""`gogooku predict`: the ranking to trade on in the next session, from a run's most recent model.

The model is the LAST fold's best checkpoint (trained on the most data); the date is any session of the
feature store with a full lookback window behind it (default: the store's last). Each stock of that date's
universe gets, per horizon, the median prediction as its score, the other quantiles and its rank (1 = the
highest score), with the company name and Sector33 name of the raw store's latest listed_info snapshot on or
before the date. Written as CSV or Parquet by the output's suffix (docs/evaluate.md).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
from rich.console import Console
from rich.progress import Progress

from etl.errors import GogookuError
from etl.files import write_atomic
from etl.panels.calendar import parse_date
from etl.sources.raw_store import read_endpoint
from train import checkpoint
from train.config import model_config
from train.data import Dataset, load_dataset
from train.evaluate import quantile_name
from train.runs import RunFolder, check_inputs, open_run
from train.step import predict_step

FORMATS = (".csv", ".parquet")


def _session(ds: Dataset, date: dt.date | None, lookback: int) -> int:
    """The store index of `date` (default: the last session), refusing a date the model cannot read."""
    first, last = ds.dates[0], ds.dates[-1]
    if date is None:
        t = len(ds.dates) - 1
    else:
        day = np.datetime64(date, "D")
        t = int(np.searchsorted(ds.dates, day))
        if t == len(ds.dates) or ds.dates[t] != day:
            raise GogookuError(
                f"--date {date}: not a session of the feature store ({first}..{last}, {len(ds.dates)} "
                "sessions); rebuild it with `gogooku etl` to add dates"
            )
    if t < lookback - 1:
        raise GogookuError(
            f"--date {ds.dates[t]}: the model reads {lookback} sessions up to the date and the store has "
            f"{t + 1} (it starts {first}); choose a date from {ds.dates[lookback - 1]}"
        )
    if not ds.stock_mask_TN[t].any():
        raise GogookuError(f"--date {ds.dates[t]}: no stock of the universe traded that session")
    return t


def listed_names(raw_dir: str | Path, day: np.datetime64) -> pl.DataFrame | None:
    """Code, CompanyName, Sector33CodeName of each code's latest listed_info row on or before `day`."""
    lf = read_endpoint(raw_dir, "listed_info")
    if lf is None:
        return None
    return (
        lf.filter(pl.col("Date") <= pl.lit(day).cast(pl.Date))
        .sort("Date")
        .group_by("Code")
        .agg(pl.col("CompanyName").last(), pl.col("Sector33CodeName").last())
        .collect()
    )


def last_fold(run: RunFolder) -> Path:
    """The fold trained on the most data: the run's last, which must have a best checkpoint."""
    if not run.folds_json:
        raise GogookuError(f"--run {run.path}: folds.json lists no fold")
    k = max(int(rec["fold"]) for rec in run.folds_json)
    fold_dir = run.fold_dir(k)
    if not (fold_dir / "best").is_dir():
        raise GogookuError(
            f"--run {run.path}: the last fold ({fold_dir.name}) has no best checkpoint: finish training with "
            f"`gogooku train --resume {run.path}`"
        )
    return fold_dir


def ranking(run_dir: str | Path, date: str | None = None, *, console: Console | None = None) -> pl.DataFrame:
    """The ranking of `date`'s universe by the last fold's model (columns: docs/evaluate.md)."""
    console = console or Console(stderr=True)
    day = None if date is None else parse_date(date, "--date")
    run = open_run(run_dir)
    fold_dir = last_fold(run)
    cfg = run.cfg
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("predict: load the feature store", total=None)
        ds = load_dataset(
            cfg, progress=lambda stage, done, total: bar.update(task, completed=done, total=total)
        )
    check_inputs(run, ds.input_hash)
    model_cfg = model_config(cfg, n_features=len(ds.input_names))
    t = _session(ds, day, model_cfg.lookback)
    params, meta = checkpoint.restore_params(fold_dir, "best")
    checkpoint.check_compatible(meta, ds.input_hash, len(ds.input_names), model_cfg, str(fold_dir / "best"))
    q_NHQ = np.asarray(predict_step(params, ds.arrays, np.array([t], np.int32), cfg=model_cfg))[0]
    slots = np.flatnonzero(ds.stock_mask_TN[t])
    day = ds.dates[t]
    frame = pl.DataFrame({"Date": np.repeat(day, slots.size), "Code": ds.codes[ds.code_TN[t, slots]]})
    frame = frame.with_columns(pl.col("Date").cast(pl.Date))
    names = listed_names(cfg.paths.raw, day)
    if names is None:
        console.print(
            f"[yellow]warning:[/] no listed_info in {cfg.paths.raw}: company names and sectors left empty",
            highlight=False,
        )
        frame = frame.with_columns(
            CompanyName=pl.lit(None, pl.String), Sector33CodeName=pl.lit(None, pl.String)
        )
    else:
        frame = frame.join(names, on="Code", how="left")
    med = model_cfg.median_index
    columns = {}
    for k, h in enumerate(model_cfg.horizons):
        columns[f"score_{h}d"] = q_NHQ[slots, k, med]
        for j, q in enumerate(model_cfg.quantiles):
            if j != med:
                columns[f"{quantile_name(q)}_{h}d"] = q_NHQ[slots, k, j]
    frame = frame.with_columns(**{name: pl.Series(values) for name, values in columns.items()})
    ranks = [
        pl.col(f"score_{h}d").rank("ordinal", descending=True).cast(pl.Int32).alias(f"rank_{h}d")
        for h in model_cfg.horizons
    ]
    frame = frame.with_columns(ranks)
    per_horizon = [
        name
        for h in model_cfg.horizons
        for name in (
            f"rank_{h}d",
            f"score_{h}d",
            *(c for c in columns if c.endswith(f"_{h}d") and c[0] == "q"),
        )
    ]
    first = model_cfg.horizons[0]
    return frame.select("Date", "Code", "CompanyName", "Sector33CodeName", *per_horizon).sort(
        f"rank_{first}d"
    )


def check_out(out: str | Path) -> Path:
    """The ranking's output file: a .csv or .parquet name in an existing folder (checked before any work)."""
    path = Path(out)
    if path.suffix.lower() not in FORMATS:
        raise GogookuError(f"--out {path}: expected a .csv or .parquet file name")
    if path.is_dir():
        raise GogookuError(f"--out {path} is a folder: it takes the file to write")
    if not path.parent.is_dir():
        raise GogookuError(f"--out {path}: no such folder {path.parent}")
    return path


def write_ranking(frame: pl.DataFrame, out: str | Path) -> Path:
    """Write the ranking as CSV or Parquet, by the suffix of `out`."""
    path = check_out(out)
    if path.suffix.lower() == ".csv":
        return write_atomic(path, frame.write_csv())
    return write_atomic(path, lambda fh: frame.write_parquet(fh, compression="zstd"))
