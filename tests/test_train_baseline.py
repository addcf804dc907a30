"""`gogooku baseline`: LightGBM on the run's folds. Early stopping sees validation rows only (the rows handed
to LightGBM are captured and traced back to their dates), the inputs are the model's at date t, the labels
its per-date rank labels, a rerun gives identical predictions, and mistakes are one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import lightgbm as lgb
import numpy as np
import polars as pl
import pytest
import scipy.stats
from train_store import INPUTS, cli_error, run_config, small_store, write_config

from train import baseline
from train.config import BaselineConfig, load_config
from train.data import design_matrix, load_dataset
from train.runs import run_folds

HORIZONS = (1, 2, 3, 5, 10)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """One baseline run with every `fit_fold` and `lightgbm.train` call recorded: (config, calls)."""
    features = small_store(tmp_path_factory.getbasetemp())
    root = tmp_path_factory.mktemp("baseline")
    raw = run_config(features, root / "runs")
    raw["train"]["folds"]["max_folds"] = 2
    raw["baseline"] = {"num_threads": 1}  # one thread: OpenMP's spinning threads crawl on a busy 2-core box
    path = write_config(root / "run.yaml", raw)
    cfg = load_config(path)
    calls = {"binned": [], "folds": [], "lgb": []}
    real_bin, real_fit, real_train = baseline.bin_training_rows, baseline.fit_fold, lgb.train

    def bin_training_rows(*args, **kwargs):
        calls["binned"].append(real_bin(*args, **kwargs))
        return calls["binned"][-1]

    def fit_fold(binned, train_idx, valid, *args, **kwargs):
        calls["folds"].append((binned, train_idx, valid))
        return real_fit(binned, train_idx, valid, *args, **kwargs)

    def train(params, train_set, *args, valid_sets=None, **kwargs):
        calls["lgb"].append((train_set, list(valid_sets or []), train_set.get_label().copy()))
        return real_train(params, train_set, *args, valid_sets=valid_sets, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(baseline, "bin_training_rows", bin_training_rows)
        mp.setattr(baseline, "fit_fold", fit_fold)
        mp.setattr(lgb, "train", train)
        baseline.run_baseline(cfg, "test")
    return cfg, path, calls


@pytest.fixture(scope="module")
def ds(setup):
    return load_dataset(setup[0])


def _out(cfg) -> Path:
    return Path(cfg.paths.runs) / cfg.train.name / "eval" / "test" / "lightgbm"


def test_early_stopping_sees_validation_rows_only(setup, ds):
    cfg, _, calls = setup
    folds = run_folds(cfg, len(ds.dates))
    assert len(calls["folds"]) == len(folds) == 2
    assert len(calls["lgb"]) == len(folds) * len(HORIZONS)
    for k, (fold, (binned_rows, train_idx, valid_rows)) in enumerate(zip(folds, calls["folds"], strict=True)):
        # the ids: every validation row is a universe stock on a validation date, and all of them are there
        assert set(valid_rows.t_R) == set(fold.valid)
        assert not set(valid_rows.t_R) & (set(fold.test) | set(fold.train))
        assert len(valid_rows.t_R) == ds.stock_mask_TN[fold.valid].sum()
        for train_set, valid_sets, _ in calls["lgb"][k * len(HORIZONS) : (k + 1) * len(HORIZONS)]:
            assert len(valid_sets) == 1 and valid_sets[0] is not train_set
            assert valid_sets[0].data is valid_rows.x_RF  # early stopping watches exactly these rows
            # training: the binned rows of the fold's training dates, all of them
            if k == len(folds) - 1:  # the last expanding fold spans every binned row: it trains on them
                assert train_idx.size == binned_rows.t_R.size and train_set is binned_rows.data
            else:
                assert np.array_equal(train_set.used_indices, train_idx)
            assert set(binned_rows.t_R[train_idx]) == set(fold.train)
            assert train_idx.size == ds.stock_mask_TN[fold.train].sum()
        # and those rows hold the model's inputs at t: the store re-read and scaled per date
        x_RF, t_R, slot_R = design_matrix(ds, fold.valid, scaled=True)
        assert np.array_equal(t_R, valid_rows.t_R) and np.array_equal(slot_R, valid_rows.slot_R)
        # the same float32 robust z-scores computed over other blocks of dates: a few ulps at most
        np.testing.assert_allclose(valid_rows.x_RF, x_RF, rtol=1e-6, atol=1e-6)
        assert valid_rows.x_RF.shape[1] == len(INPUTS)  # inputs at t, no lookback window
    # the bin edges come from the first fold's training rows only
    (binned,) = calls["binned"]
    assert set(binned.t_R) == set(folds[0].train) | set(folds[1].train)


def test_labels_are_the_per_date_rank_labels(setup, ds):
    cfg, _, calls = setup
    binned_rows, train_idx, _ = calls["folds"][0]
    t_R, slot_R = binned_rows.t_R[train_idx], binned_rows.slot_R[train_idx]
    for k in range(len(HORIZONS)):
        label = calls["lgb"][k][2]
        day = t_R[0]
        on_day = t_R == day
        ret = ds.ret_TNH[day, slot_R[on_day], k]
        ok = np.isfinite(ret)
        ranks = scipy.stats.rankdata(ret[ok])
        want = (ranks - ranks.mean()) / ranks.std()  # average ranks, standardised (population sd)
        np.testing.assert_allclose(label[on_day][ok], want, rtol=1e-6, atol=1e-6)  # float32 labels


def test_baseline_writes_the_contract_files(setup, ds):
    cfg = setup[0]
    out = _out(cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "lightgbm" and metrics["seed"] == cfg.baseline.seed
    assert metrics["horizons"] == list(HORIZONS) and len(metrics["folds"]) == 2
    params = metrics["lightgbm"]["params"]
    assert params["deterministic"] and params["seed"] == cfg.baseline.seed and params["num_threads"] >= 1
    for fold in metrics["lightgbm"]["folds"]:
        assert all(1 <= n <= cfg.baseline.num_boost_round for n in fold["best_iteration"].values())
    pred = pl.read_parquet(out / "predictions.parquet")
    assert pred.columns == ["Date", "Code", "fold", *(f"pred_{h}d" for h in HORIZONS)]
    assert pred["pred_1d"].null_count() == 0
    importance = pl.read_csv(out / "importance.csv")
    assert importance.columns == ["input", "horizon", "gain"]
    assert sorted(importance.filter(pl.col("horizon") == 1)["input"]) == sorted(INPUTS)
    assert (importance["gain"] >= 0).all() and importance["gain"].sum() > 0
    run_dir = Path(cfg.paths.runs) / cfg.train.name
    for name in ("config.yaml", "inputs.json", "folds.json"):  # started the run folder as train would
        assert (run_dir / name).is_file()
    assert json.loads((run_dir / "stages.json").read_text())["baseline"]["device"].startswith("cpu")


def test_a_rerun_gives_identical_predictions(setup):
    cfg = setup[0]
    out = _out(cfg)
    first = pl.read_parquet(out / "predictions.parquet")
    gains = pl.read_csv(out / "importance.csv")
    baseline.run_baseline(cfg, "test")
    assert pl.read_parquet(out / "predictions.parquet").equals(first)
    assert pl.read_csv(out / "importance.csv").equals(gains)


def test_mistakes_are_one_line_errors(setup, tmp_path):
    cfg, path, _ = setup
    assert "baseline.learning_rate" in cli_error(["baseline", "-c", str(path), "baseline.learning_rate=0"])
    assert "baseline.bagging_fraction" in cli_error(
        ["baseline", "-c", str(path), "baseline.bagging_fraction=2"]
    )
    other = "data.inputs=[returns_1d, rsi_14]"
    assert "other inputs or folds" in cli_error(["baseline", "-c", str(path), other])
    (tmp_path / "runs" / "mine").mkdir(parents=True)
    (tmp_path / "runs" / "mine" / "notes.txt").write_text("mine")
    overrides = [f"paths.runs={tmp_path / 'runs'}", "train.name=mine"]
    assert "not a run folder" in cli_error(["baseline", "-c", str(path), *overrides])
    assert (tmp_path / "runs" / "mine" / "notes.txt").read_text() == "mine"


def test_trees_without_a_split_are_a_warning(setup, tmp_path):
    from typer.testing import CliRunner

    from train.cli import app

    path = setup[1]
    overrides = [f"paths.runs={tmp_path}", "baseline.min_data_in_leaf=100000000", "train.folds.max_folds=1"]
    result = CliRunner().invoke(app, ["baseline", "-c", str(path), *overrides], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    warned = [ln for ln in result.output.splitlines() if "no tree split its rows" in ln]
    assert len(warned) == len(HORIZONS) and "fold 0, 1d" in warned[0], result.output
    assert (
        "no tree split"
        not in CliRunner()
        .invoke(
            app, ["baseline", "-c", str(path), f"paths.runs={tmp_path / 'ok'}", "train.folds.max_folds=1"]
        )
        .output
    )


@pytest.mark.parametrize("sample_cnt", [200_000, 150])  # every row finds the bin edges; a sample of them
def test_binning_from_the_panel_equals_binning_a_float_matrix(sample_cnt, monkeypatch):
    """`bin_training_rows` hands LightGBM the panel's rows in batches (`PanelRows`); the trees it grows must
    be those grown from the float matrix of the same rows, bin edges from the first fold's rows."""
    monkeypatch.setattr(baseline.PanelRows, "batch_size", 37)  # several batches, the last one short
    rng = np.random.default_rng(0)
    x_TNF = rng.standard_normal((40, 30, 5), dtype=np.float32)
    x_TNF[rng.random(x_TNF.shape) < 0.1] = np.nan
    x_TNF[..., 4] = np.round(x_TNF[..., 4])  # a few distinct values and zeros, as a count column has
    mask_TN = rng.random((40, 30)) < 0.8
    folds = [SimpleNamespace(train=np.arange(0, 20)), SimpleNamespace(train=np.arange(5, 30))]
    bc = BaselineConfig(num_threads=1, min_data_in_leaf=20, bagging_fraction=1.0)
    params = {**baseline.lightgbm_params(bc), "bin_construct_sample_cnt": sample_cnt}
    names = [f"x{i}" for i in range(5)]
    binned = baseline.bin_training_rows(x_TNF, mask_TN, folds, params, names)

    first = baseline.universe_rows(x_TNF, mask_TN, folds[0].train)
    rows = baseline.universe_rows(x_TNF, mask_TN, np.arange(30))
    assert np.array_equal(binned.t_R, rows.t_R) and np.array_equal(binned.slot_R, rows.slot_R)
    edges = lgb.Dataset(first.x_RF, label=np.zeros(len(first.t_R)), feature_name=names, params=params)
    n = rows.t_R.size
    matrix = lgb.Dataset(
        rows.x_RF, label=np.zeros(n), weight=np.ones(n, np.float32), feature_name=names, reference=edges
    ).construct()
    y = rng.standard_normal(n) + np.nan_to_num(rows.x_RF[:, 0])
    # and `fit_fold` trains a fold that spans every binned row on the binned data itself, not on a subset
    every = binned.data.subset(np.arange(n))
    trees = []
    for data in (binned.data, matrix, every):
        data.set_label(y)
        trees.append(lgb.train(params, data, num_boost_round=10).model_to_string())
    assert trees[0] == trees[1] == trees[2]
    assert "split_feature=0" in trees[0]  # the trees split: a test of equal stumps would prove nothing
