"""`gogooku evaluate` and `gogooku predict` on a tiny trained run: the run-folder contract's files, the same
rows and universe for every model, the oracle and the reversal aligned to the store's grid and scored as the
synthetic market's documentation measures them, a checkpoint that restores in a fresh process and predicts
what training measured, and predict's ranking and its one-line errors.

One tiny run per module: the small synthetic store of tests/train_store.py, the tiny model, two folds of two
training steps each (`gogooku train` itself), then `gogooku evaluate` and `gogooku baseline` on it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
import scipy.stats
from train_store import cli_error, run_config, small_store, write_config
from typer.testing import CliRunner

from etl.sources.raw_store import read_endpoint
from train.baseline import run_baseline
from train.cli import app
from train.config import load_config
from train.data import load_dataset
from train.evaluate import evaluate_run
from train.loop import run_training

REPO = Path(__file__).resolve().parent.parent
HORIZONS = (1, 2, 3, 5, 10)
QUANTILES = ("q10", "q25", "q50", "q75", "q90")
DAILY = (
    "Date fold horizon ic rank_ic hit_rate spread ls_gross ls_net ls_turnover topk_gross topk_net "
    "topk_excess topk_turnover jpx_spread topix"
).split()
MODELS = ("atft", "lightgbm", "oracle", "reversal_5d")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A trained, evaluated (test split) and baselined tiny run: (run folder, config path, store)."""
    features = small_store(tmp_path_factory.getbasetemp())
    root = tmp_path_factory.mktemp("eval_run")
    raw = run_config(features, root / "runs", max_steps=2, max_epochs=1)
    raw["train"]["folds"]["max_folds"] = 2
    raw["baseline"] = {"num_threads": 1}  # one thread: OpenMP's spinning threads crawl on a busy 2-core box
    path = write_config(root / "tiny.yaml", raw)
    cfg = load_config(path)
    run_training(cfg)
    run_dir = Path(cfg.paths.runs) / cfg.train.name
    evaluate_run(run_dir, "test")
    run_baseline(cfg, "test")
    return run_dir, path, features


@pytest.fixture(scope="module")
def ds(run):
    return load_dataset(load_config(run[0] / "config.yaml"))


def _eval(run_dir: Path, model: str, split: str = "test") -> Path:
    return run_dir / "eval" / split / model


def test_evaluate_writes_the_contract_files(run, ds):
    run_dir = run[0]
    for model in MODELS:
        folder = _eval(run_dir, model)
        metrics = json.loads((folder / "metrics.json").read_text())
        assert {"model", "split", "horizons", "seed", "overall", "folds", "deciles"} <= set(metrics)
        assert metrics["model"] == model and metrics["split"] == "test"
        assert metrics["horizons"] == list(HORIZONS) and len(metrics["folds"]) == 2
        assert set(metrics["deciles"]) == {f"{h}d" for h in HORIZONS}
        assert len(metrics["deciles"]["1d"]) == 10
        daily = pl.read_parquet(folder / "daily.parquet")
        assert daily.columns == DAILY
        assert daily.group_by("Date", "horizon").len()["len"].max() == 1  # one row per date and horizon
        pred = pl.read_parquet(folder / "predictions.parquet")
        want = ["Date", "Code", "fold", *(f"pred_{h}d" for h in HORIZONS)]
        if model == "atft":
            want += [f"{q}_{h}d" for h in HORIZONS for q in QUANTILES]
            assert pred["pred_1d"].equals(pred["q50_1d"])  # the score ranked is the median quantile
        assert pred.columns == want
    vsn = pl.read_csv(_eval(run_dir, "atft") / "vsn_weights.csv")
    assert vsn.columns == ["input", "weight"] and sorted(vsn["input"]) == sorted(ds.input_names)
    assert vsn["weight"].sum() == pytest.approx(1.0, abs=1e-5)  # softmax weights, float32 sums of ~1e3 terms
    importance = pl.read_csv(_eval(run_dir, "lightgbm") / "importance.csv")
    assert importance.columns == ["input", "horizon", "gain"] and importance.height == 8 * len(HORIZONS)
    stages = json.loads((run_dir / "stages.json").read_text())
    assert {"train", "evaluate", "baseline"} <= set(stages)
    assert all({"wall_s", "device", "finished"} <= set(s) for s in stages.values())


def _universe_rows(features: Path, dates: list) -> pl.DataFrame:
    """The universe read from the store directly: a close, Volume > 0, not sector33 '9999' (id 33)."""
    store = pl.scan_parquet(str(features / "year=*" / "*.parquet"))
    rows = store.filter(
        pl.col("Date").is_in(dates)
        & pl.col("Close").is_not_null()
        & (pl.col("Volume") > 0)
        & (pl.col("sector33_id") != 33)
    )
    return rows.select("Date", "Code").collect().sort("Date", "Code")


def test_every_model_is_scored_on_the_same_rows_the_universe_of_each_date(run):
    run_dir, _, features = run
    folds = json.loads((run_dir / "folds.json").read_text())
    frames = {m: pl.read_parquet(_eval(run_dir, m) / "predictions.parquet") for m in MODELS}
    keys = {m: f.select("Date", "Code", "fold").sort("Date", "Code") for m, f in frames.items()}
    for model in MODELS[1:]:
        assert keys[model].equals(keys["atft"]), model
    dates = keys["atft"]["Date"].unique().sort()
    test_sessions = sum(f["test"]["sessions"] for f in folds)
    assert dates.len() == test_sessions
    assert keys["atft"].select("Date", "Code").equals(_universe_rows(features, dates.to_list()))
    for f in folds:  # each fold predicts its own test segment
        seg = keys["atft"].filter(pl.col("fold") == f["fold"])["Date"]
        assert str(seg.min()) == f["test"]["first"] and str(seg.max()) == f["test"]["last"]


def test_the_oracle_is_aligned_to_the_grid_and_scored_as_docs_synthetic_measures_it(run):
    """Per date, the oracle's RankIC in daily.parquet is SciPy's Spearman correlation of
    expected_return_{h}d with the realised target_{h}d over the universe rows (docs/synthetic.md's measure,
    on the store's forward returns)."""
    run_dir, _, features = run
    oracle = pl.read_parquet(features.parent / "raw" / "oracle.parquet")
    pred = pl.read_parquet(_eval(run_dir, "oracle") / "predictions.parquet")
    joined = pred.join(oracle, on=["Date", "Code"], how="left")
    for h in HORIZONS:
        a, b = joined[f"pred_{h}d"].to_numpy(), joined[f"expected_return_{h}d"].cast(pl.Float32).to_numpy()
        assert np.array_equal(a, b, equal_nan=True)  # the same float32 values at the same (Date, Code)
    targets = pl.scan_parquet(str(features / "year=*" / "*.parquet")).select(
        "Date", "Code", *(f"target_{h}d" for h in HORIZONS)
    )
    rows = (
        pred.select("Date", "Code")
        .join(targets.collect(), on=["Date", "Code"])
        .join(oracle, on=["Date", "Code"])
    )
    daily = pl.read_parquet(_eval(run_dir, "oracle") / "daily.parquet")
    metrics = json.loads((_eval(run_dir, "oracle") / "metrics.json").read_text())
    for h in (1, 5):
        per_date = {}
        for (day,), part in rows.group_by("Date"):
            ok = part.drop_nulls([f"target_{h}d", f"expected_return_{h}d"])
            signal = ok[f"expected_return_{h}d"].cast(pl.Float32)  # the scorer ranks float32 values
            per_date[day] = scipy.stats.spearmanr(signal, ok[f"target_{h}d"])[0]
        ours = dict(daily.filter(pl.col("horizon") == h).select("Date", "rank_ic").iter_rows())
        assert ours.keys() == per_date.keys()
        for day, ic in per_date.items():
            # the same ranks; the scorer's Pearson on them sums ~40 float32 products (relative error ~1e-7)
            assert ours[day] == pytest.approx(ic, abs=1e-6), day
        mean = metrics["overall"]["horizons"][f"{h}d"]["signal"]["rank_ic_mean"]
        assert mean == pytest.approx(np.mean(list(per_date.values())), abs=1e-6)


def test_reversal_is_minus_the_stores_5_day_return(run):
    run_dir, _, features = run
    pred = pl.read_parquet(_eval(run_dir, "reversal_5d") / "predictions.parquet")
    store = pl.scan_parquet(str(features / "year=*" / "*.parquet")).select("Date", "Code", "returns_5d")
    joined = pred.join(store.collect(), on=["Date", "Code"], how="left")
    for h in HORIZONS:
        assert np.array_equal(
            joined[f"pred_{h}d"].to_numpy(), -joined["returns_5d"].cast(pl.Float32).to_numpy(), equal_nan=True
        )


def test_best_checkpoints_restore_to_what_training_measured(run):
    """Evaluated on the validation split from the restored best checkpoints, each fold's RankIC is the one
    the training process logged for its best step (summary.json). The validation segments leave a gap
    between the folds: those sessions belong to no fold and are not reported."""
    run_dir = run[0]
    metrics = evaluate_run(run_dir, "valid")["atft"]
    folds = json.loads((run_dir / "folds.json").read_text())
    assert metrics["dates"][2] == sum(f["valid"]["sessions"] for f in folds)
    for fold in metrics["folds"]:
        assert fold["dates"][2] == folds[fold["fold"]]["valid"]["sessions"]
        logged = json.loads((run_dir / f"fold_{fold['fold']}" / "summary.json").read_text())["best_valid"]
        for h in HORIZONS:
            ours = fold["horizons"][f"{h}d"]["signal"]["rank_ic_mean"]
            # the same float32 predictions and ranks; both correlate and average in float32 (~1e-7)
            assert ours == pytest.approx(logged["valid_rank_ic_h"][str(h)], abs=1e-6)
    daily = pl.read_parquet(_eval(run_dir, "atft", "valid") / "daily.parquet")
    assert daily["Date"].n_unique() == metrics["dates"][2]


def test_a_fresh_process_restores_the_checkpoints_and_predicts_the_same_numbers(run):
    run_dir = run[0]
    folder = _eval(run_dir, "atft")
    before = pl.read_parquet(folder / "predictions.parquet")
    metrics = json.loads((folder / "metrics.json").read_text())
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [sys.executable, "-m", "train", "evaluate", "--run", str(run_dir)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert pl.read_parquet(folder / "predictions.parquet").equals(before)
    assert json.loads((folder / "metrics.json").read_text()) == metrics


def test_predict_ranks_the_last_date_with_the_last_folds_model(run, tmp_path):
    run_dir, _, features = run
    out = tmp_path / "ranking.parquet"
    result = CliRunner().invoke(app, ["predict", "--run", str(run_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    frame = pl.read_parquet(out)
    per_h = [f"{p}_{h}d" for h in HORIZONS for p in ("rank", "score", "q10", "q25", "q75", "q90")]
    assert frame.columns == ["Date", "Code", "CompanyName", "Sector33CodeName", *per_h]
    last = (
        pl.scan_parquet(str(features / "year=*" / "*.parquet")).select(pl.col("Date").max()).collect().item()
    )
    assert frame["Date"].unique().to_list() == [last]
    assert sorted(frame["Code"]) == sorted(_universe_rows(features, [last])["Code"])
    for h in HORIZONS:  # rank 1 = the highest score, a permutation of 1..n
        ordered = frame.sort(f"rank_{h}d")
        assert ordered[f"rank_{h}d"].to_list() == list(range(1, frame.height + 1))
        assert ordered[f"score_{h}d"].is_sorted(descending=True)
    info = read_endpoint(features.parent / "raw", "listed_info").collect().to_pandas()
    latest = info[info["Date"] <= pd.Timestamp(last)].sort_values("Date").groupby("Code").last()
    for row in frame.head(5).iter_rows(named=True):
        assert row["CompanyName"] == latest.loc[row["Code"], "CompanyName"]
        assert row["Sector33CodeName"] == latest.loc[row["Code"], "Sector33CodeName"]


def test_predict_matches_the_evaluation_of_the_last_fold(run, tmp_path):
    """On a date of the last fold's test segment, predict's score is the evaluation's prediction."""
    run_dir = run[0]
    evaluated = pl.read_parquet(_eval(run_dir, "atft") / "predictions.parquet").filter(pl.col("fold") == 1)
    day = evaluated["Date"].min()
    out = tmp_path / "ranking.csv"
    result = CliRunner().invoke(
        app, ["predict", "--run", str(run_dir), "--date", str(day), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    joined = pl.read_csv(out, schema_overrides={"Code": pl.String}).join(
        evaluated.filter(pl.col("Date") == day), on="Code"
    )
    assert joined.height == evaluated.filter(pl.col("Date") == day).height
    for h in HORIZONS:  # the CSV keeps float32's shortest round-trip digits; two compiled graphs, a few ulps
        np.testing.assert_allclose(joined[f"score_{h}d"], joined[f"pred_{h}d"], rtol=1e-5, atol=1e-6)


def test_predict_and_evaluate_errors_are_one_line(run, tmp_path):
    run_dir = str(run[0])
    assert "not a session of the feature store" in cli_error(
        ["predict", "--run", run_dir, "--date", "2021-01-02"]
    )
    assert "the model reads 8 sessions" in cli_error(["predict", "--run", run_dir, "--date", "2021-01-05"])
    for bad in ("June", "2023-12", "2023-13-01", ""):  # a partial date is no session either
        assert f"--date {bad!r} is not a date (YYYY-MM-DD)" in cli_error(
            ["predict", "--run", run_dir, "--date", bad]
        )
    bad_out = str(tmp_path / "ranking.xlsx")
    assert ".csv or .parquet" in cli_error(["predict", "--run", run_dir, "--out", bad_out])
    # checked before the run is read: a missing run folder is not what it reports
    assert ".csv or .parquet" in cli_error(["predict", "--run", str(tmp_path / "none"), "--out", bad_out])
    assert "no such folder" in cli_error(
        ["predict", "--run", run_dir, "--out", str(tmp_path / "nowhere" / "r.csv")]
    )
    assert "no such run folder" in cli_error(["predict", "--run", str(tmp_path / "none")])
    half = tmp_path / "half"
    half.mkdir()
    (half / "config.yaml").write_text((run[0] / "config.yaml").read_text())
    assert "no inputs.json" in cli_error(["evaluate", "--run", str(half)])
    assert "only eval.key=value" in cli_error(["evaluate", "--run", run_dir, "model.hidden=8"])
    assert "--split train" in cli_error(["evaluate", "--run", run_dir, "--split", "train"])


def test_eval_settings_that_leave_nothing_to_score_are_one_line_errors(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run[0], copy)
    assert "fewer than eval.min_stocks (100000); nothing to score" in cli_error(
        ["evaluate", "--run", str(copy), "eval.min_stocks=100000"]
    )
    assert "eval.lag = 100000 sessions: the test split spans" in cli_error(
        ["evaluate", "--run", str(copy), "eval.lag=100000"]
    )


@pytest.mark.parametrize("damage", ["meta", "state"])
def test_a_damaged_checkpoint_is_a_one_line_error(run, tmp_path, damage):
    """Orbax's errors for a checkpoint with files missing become one line naming the checkpoint."""
    copy = tmp_path / "run"
    shutil.copytree(run[0], copy)
    best = next(p for p in (copy / "fold_1" / "best").iterdir() if p.name.isdigit())
    shutil.rmtree(best / damage)
    message = cli_error(["predict", "--run", str(copy)])
    assert f"checkpoint {best} is damaged or incomplete" in message, message


@pytest.mark.slow
def test_oracle_rank_ic_on_the_demo_market_is_the_table_of_docs_synthetic(tmp_path):
    """The scorer's RankIC of the oracle over every session of the demo market (configs/demo.yaml), on the
    universe mask, rounds to the table docs/synthetic.md publishes (bench/synth_signals.py measures it)."""
    from etl.pipeline import build_store
    from etl.sources.synthetic import generate
    from train.evaluate import make_grid, oracle_on_grid, score_dates
    from train.metrics import summarise

    text = (REPO / "docs" / "synthetic.md").read_text()
    header = re.search(r"^\| h \| (.+) \|$", text, re.M)
    row = re.search(r"^\| mean daily RankIC \| (.+) \|$", text, re.M)
    assert header and row, "docs/synthetic.md lost its oracle table"
    table = dict(
        zip((int(h) for h in header[1].split(" | ")), (float(v) for v in row[1].split(" | ")), strict=True)
    )
    demo = load_config(REPO / "configs" / "demo.yaml", [f"paths.features={tmp_path / 'features'}"])
    generate(demo.synth, tmp_path / "raw")
    build_store(tmp_path / "raw", tmp_path / "features", device="cpu", graph=demo.graph)
    ds = load_dataset(
        load_config(None, [f"paths.features={tmp_path / 'features'}", "data.inputs=[returns_1d]"])
    )
    grid = make_grid(ds)
    every = np.arange(len(ds.dates))
    scores = score_dates(
        grid, every, oracle_on_grid(tmp_path / "raw" / "oracle.parquet", ds)[every], demo.eval
    )
    summary = summarise(scores, ds.horizons)
    for h in ds.horizons:
        assert round(summary["horizons"][f"{h}d"]["signal"]["rank_ic_mean"], 3) == table[h], h
