"""The training loop end to end on a small generated store: exact resume after a real kill, four devices vs
one, the zero-gradient monitor, the non-finite stop, the placebo (shuffled targets), refused checkpoints and
restoring a fold's best parameters from the run folder alone.

The subprocess runs share this module's persistent compilation cache with the in-process runs.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import optax
import pytest
from train_store import cli_error, first_losses, run_config, small_store, write_config
from typer.testing import CliRunner

import train.checkpoint
import train.step
from etl.errors import GogookuError
from train.checkpoint import restore_params
from train.cli import app
from train.config import load_config, model_config
from train.data import load_dataset
from train.loop import TrainingError, ZeroGradMonitor, _prepare_run_dir, run_training
from train.step import batches, learning_rate, valid_ic_step

ROOT = Path(__file__).resolve().parents[1]
CACHE = tempfile.mkdtemp(prefix="gogooku-test-jax-cache-")
atexit.register(shutil.rmtree, CACHE, True)
jax.config.update("jax_compilation_cache_dir", CACHE)  # before the session's first compilation
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
runner = CliRunner()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return small_store(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


def _config(store, runs, name, **train):
    return run_config(store, runs, name=name, **train)


def _load(raw: dict, tmp: Path) -> object:
    return load_config(write_config(tmp / f"{raw['train']['name']}.yaml", raw))


def _records(run_dir: Path, kind: str, fold: int = 0) -> list[dict]:
    lines = (run_dir / f"fold_{fold}" / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def _cli(config: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_COMPILATION_CACHE_DIR": CACHE, **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "train", "train", "--config", str(config), *args],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.fixture(scope="module")
def baseline(store, runs):
    """An uninterrupted run: 48 steps (an epoch is 30), validated at 30 and 48, dropout on."""
    raw = _config(store, runs, "baseline", max_steps=48, checkpoint_every=8)
    result = run_training(_load(raw, runs))
    return raw, Path(result["run_dir"]), result


def test_learning_rate_matches_optax_warmup_cosine():
    reference = optax.warmup_cosine_decay_schedule(0.0, 3e-4, 10, 100, 0.0)
    for step in (0, 1, 5, 10, 11, 50, 99, 100, 120):
        got = float(learning_rate(step, np.array([3e-4, 10, 100], np.float32)))
        assert got == pytest.approx(float(reference(step)), rel=1e-5, abs=1e-12)


def test_zero_gradient_monitor_counts_consecutive_exact_zeros():
    monitor = ZeroGradMonitor(limit=3)
    fired = [monitor.update({"gat": g, "vsn": 1.0}) for g in (0.0, 0.0, 1e-30, 0.0, 0.0, 0.0, 0.0)]
    assert fired == [[], [], [], [], [], ["gat"], []]  # a tiny non-zero resets the count; warns once


def test_evaluation_batches_pad_with_the_last_date():
    out = batches(np.arange(5), 2)
    assert [(list(b), n) for b, n in out] == [([0, 1], 2), ([2, 3], 2), ([4, 4], 1)]


def test_a_normal_run_writes_the_run_folder_and_stays_silent(baseline):
    raw, run_dir, result = baseline
    for name in ("config.yaml", "inputs.json", "folds.json", "summary.json"):
        assert (run_dir / name).is_file(), name
    inputs = json.loads((run_dir / "inputs.json").read_text())
    assert inputs["inputs"] == raw["data"]["inputs"] and len(inputs["input_hash"]) == 64
    assert load_config(run_dir / "config.yaml").model.n_features == len(raw["data"]["inputs"])
    fold = result["folds"][0]
    assert fold["stop"] == "max_steps" and fold["steps"] == 48 and fold["zero_gradient_warnings"] == []
    assert [r["step"] for r in _records(run_dir, "valid")] == [30, 48]
    assert not _records(run_dir, "warning")
    train_logs = _records(run_dir, "train")
    assert [r["step"] for r in train_logs] == list(range(1, 49))
    for module in train.step.MODULES:
        assert all(r[f"grad_norm/{module}"] > 0 for r in train_logs), module


def test_resume_after_a_kill_equals_the_uninterrupted_run(baseline, store, runs):
    raw, base_dir, _ = baseline
    raw = {**raw, "train": {**raw["train"], "name": "killed"}}
    path = write_config(runs / "killed.yaml", raw)
    proc = _cli(path)
    latest = runs / "killed" / "fold_0" / "latest"
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        if latest.is_dir() and any(p.name.isdigit() for p in latest.iterdir()):
            proc.send_signal(signal.SIGKILL)  # a real kill, mid-run
            break
        time.sleep(0.05)
    out = proc.communicate()[0]
    assert proc.returncode == -signal.SIGKILL, out[-2000:]
    steps = [int(p.name) for p in latest.iterdir() if p.name.isdigit()]
    assert steps and max(steps) < 48
    run_training(load_config(runs / "killed" / "config.yaml"), resume=runs / "killed")
    got, _ = restore_params(runs / "killed" / "fold_0", "latest")
    want, _ = restore_params(base_dir / "fold_0", "latest")
    diffs = jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))), got, want)
    assert max(jax.tree.leaves(diffs)) <= 1e-6
    losses = lambda d: [(r["step"], r["loss"]) for r in _records(d, "train")]
    assert losses(runs / "killed") == losses(base_dir)
    valid = lambda d: [(r["step"], r["valid_rank_ic"]) for r in _records(d, "valid")]
    assert valid(runs / "killed") == valid(base_dir)


def test_four_devices_give_the_losses_of_one(store, runs):
    path = write_config(runs / "devices.yaml", _config(store, runs, "devices"))
    one = first_losses(path, 6)
    code = f"import json, train_store as t; print(json.dumps(t.first_losses({str(path)!r}, 6)))"
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}",
        "JAX_COMPILATION_CACHE_DIR": CACHE,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
    }
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    four = json.loads(out.stdout.strip().splitlines()[-1])
    assert one["devices"] == 1 and four["devices"] == 4
    # the same float32 sums in another order (per-device partial sums, then an all-reduce)
    np.testing.assert_allclose(four["losses"], one["losses"], rtol=1e-5)


def test_the_zero_gradient_monitor_fires_when_a_module_is_cut(store, runs, monkeypatch):
    cut_loss = train.step.loss_fn

    def loss_without_gat_gradient(params, batch, rng, cfg):
        inner = params["params"]
        frozen = {**inner, "gat": jax.lax.stop_gradient(inner["gat"])}
        return cut_loss({"params": frozen}, batch, rng, cfg)

    monkeypatch.setattr(train.step, "loss_fn", loss_without_gat_gradient)
    train.step.compiled_train_step.cache_clear()  # trace the step again, with the cut
    try:
        raw = _config(store, runs, "cut", max_steps=5, zero_grad_steps=3, checkpoint_every=100)
        result = run_training(_load(raw, runs))
    finally:
        train.step.compiled_train_step.cache_clear()
    assert result["folds"][0]["zero_gradient_warnings"] == ["gat"]
    (warning,) = _records(runs / "cut", "warning")
    assert warning["module"] == "gat" and warning["step"] == 3 and "'gat'" in warning["message"]
    assert all(r["grad_norm/gat"] == 0.0 and r["grad_norm/vsn"] > 0 for r in _records(runs / "cut", "train"))


def test_a_non_finite_step_stops_the_run_and_keeps_the_last_good_checkpoint(store, runs):
    raw = _config(store, runs, "diverge", lr=1e30, warmup_steps=0, max_steps=20, checkpoint_every=1)
    with pytest.raises(
        TrainingError, match=r"fold 0, step \d+: non-finite loss .* \(modules: [a-z, ]+\)"
    ) as err:
        run_training(_load(raw, runs))
    bad_step = int(str(err.value).split("step ")[1].split(":")[0])
    params, meta = restore_params(runs / "diverge" / "fold_0", "latest")
    assert meta["step"] == bad_step - 1
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(params))
    assert "last good checkpoint" in str(err.value) and f"at step {bad_step - 1}" in str(err.value)


def test_shuffled_targets_give_noise_level_validation_rank_ic(store, runs):
    raw = _config(
        store, runs, "placebo", shuffle_targets=True, max_epochs=3, patience=0, checkpoint_every=100
    )
    run_training(_load(raw, runs))
    valid = _records(runs / "placebo", "valid")
    assert len(valid) == 3
    # 40 validation dates of ~37 stocks: a mean daily RankIC has a standard error of about
    # 1 / sqrt(36 * 40) = 0.026 under no signal; 0.1 is about four of them
    for record in valid:
        assert abs(record["valid_rank_ic_h"]["1"]) < 0.1 and abs(record["valid_rank_ic"]) < 0.1


def test_restored_best_parameters_reproduce_the_recorded_validation(baseline, store):
    raw, run_dir, result = baseline
    params, meta = restore_params(run_dir / "fold_0", "best")
    cfg = load_config(run_dir / "config.yaml")
    ds = load_dataset(cfg)
    folds = json.loads((run_dir / "folds.json").read_text())
    valid = np.arange(folds[0]["valid"]["first_index"], folds[0]["valid"]["last_index"] + 1)
    model_cfg = model_config(cfg)
    ic = np.concatenate(
        [np.asarray(valid_ic_step(params, ds.arrays, d, cfg=model_cfg))[:n] for d, n in batches(valid, 4)]
    )
    got = float(np.nanmean(ic[:, 0]))
    assert meta["step"] == result["folds"][0]["best_step"]
    assert got == pytest.approx(meta["best_valid"]["valid_rank_ic_h"]["1"], abs=1e-6)


def test_resume_refuses_another_model_or_input_list(baseline):
    _, run_dir, _ = baseline
    res = runner.invoke(app, ["train", "--resume", str(run_dir), "model.hidden=32"])
    out = " ".join(res.output.split())
    assert res.exit_code == 2
    assert "another model config" in out and "hidden: 16 vs 32" in out
    res = runner.invoke(app, ["train", "--resume", str(run_dir), "data.inputs=[returns_1d, rsi_14]"])
    out = " ".join(res.output.split())
    assert res.exit_code == 2 and "another input list" in out and "missing now: returns_5d" in out


def test_a_second_run_of_the_same_name_is_refused_in_one_line(baseline):
    raw, run_dir, _ = baseline
    res = runner.invoke(app, ["train", "--config", str(run_dir / "config.yaml")])
    out = " ".join(res.output.split())
    assert res.exit_code == 2 and "already holds a run" in out and "--resume" in out
    assert "Traceback" not in res.output


def test_folds_command_prints_the_table(baseline):
    _, run_dir, _ = baseline
    res = runner.invoke(app, ["folds", "--config", str(run_dir / "config.yaml")])
    assert res.exit_code == 0, res.output
    row = next(line for line in res.output.splitlines() if line.startswith("│    0 │"))
    assert "1 walk-forward folds" in res.output
    assert [cell.strip() for cell in row.strip("│").split("│")][2::2] == ["120", "40", "60"]


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def test_overwrite_removes_every_artifact_of_an_evaluated_run_and_keeps_other_files(tmp_path):
    run_dir = tmp_path / "run"
    written = [  # what train, evaluate, baseline, report, predict and ablate write (docs/evaluate.md)
        "config.yaml",
        "inputs.json",
        "folds.json",
        "summary.json",
        "stages.json",
        "report.html",
        "ranking_2022-06-30.csv",
        ".stages.json.4242.tmp",
        "fold_0/metrics.jsonl",
        "fold_0/summary.json",
        "fold_0/latest/48/state/x",
        "fold_1/best/30/meta/y",
        "eval/test/atft/predictions.parquet",
        "eval/test/atft/daily.parquet",
        "eval/test/atft/metrics.json",
        "eval/test/atft/vsn_weights.csv",
        "eval/test/lightgbm/importance.csv",
        "eval/valid/oracle/metrics.json",
    ]
    mine = [  # the user's: never the project's names; and ablate's runs, hours of work with their own config
        "notes.txt",
        "ranking_mine.csv",
        "fold_notes/a.txt",
        "fold_0/todo.md",
        "eval/test/atft/plot.png",
        "ablation/full/seed_0/config.yaml",
        "ablation/full/seed_0/fold_0/best/4/x",
        "ablation/no_gat/seed_1/stages.json",
    ]
    for name in written + mine:
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_text("old")
    with pytest.raises(GogookuError, match="already holds a run"):
        _prepare_run_dir(run_dir, overwrite=False)
    assert _tree(run_dir) == set(written + mine)
    _prepare_run_dir(run_dir, overwrite=True)
    assert _tree(run_dir) == set(mine)
    assert not (run_dir / "eval" / "valid").exists() and not (run_dir / "fold_1").exists()


def test_a_resume_with_other_train_or_data_settings_is_refused_and_changes_nothing(baseline, tmp_path):
    _, base_dir, _ = baseline
    run_dir = tmp_path / "copy"
    shutil.copytree(base_dir, run_dir)
    before = (run_dir / "config.yaml").read_bytes()
    line = cli_error(["train", "--resume", str(run_dir), "train.lr=0.5", "data.clip=2.0", "--max-steps", "4"])
    assert "train.lr: 0.001 vs 0.5" in line and "train.max_steps: 48 vs 4" in line
    assert "data.clip: 5.0 vs 2.0" in line and "train.seed" not in line
    assert (run_dir / "config.yaml").read_bytes() == before


def test_a_resume_with_another_checkpoint_and_log_cadence_equals_the_uninterrupted_run(
    baseline, store, runs, monkeypatch
):
    raw, base_dir, _ = baseline
    raw = {**raw, "train": {**raw["train"], "name": "cadence"}}
    save, saved = train.checkpoint.save, []

    class Killed(Exception):
        pass

    def save_then_stop(manager, step, *args):
        saved.append(step)
        if len(saved) == 2:  # the second save (step 16) never happens: 'latest' stays at step 8
            raise Killed
        save(manager, step, *args)

    monkeypatch.setattr(train.checkpoint, "save", save_then_stop)
    with pytest.raises(Killed):
        run_training(_load(raw, runs))
    monkeypatch.setattr(train.checkpoint, "save", save)
    assert saved == [8, 16]
    resumed = {**raw, "train": {**raw["train"], "checkpoint_every": 5, "log_every": 3}}
    run_training(_load(resumed, runs), resume=runs / "cadence")
    for kind in ("latest", "best"):
        got, got_meta = restore_params(runs / "cadence" / "fold_0", kind)
        want, want_meta = restore_params(base_dir / "fold_0", kind)
        assert got_meta["step"] == want_meta["step"]
        diffs = jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))), got, want)
        # the same steps on the same dates: bit-identical on one machine; 1e-6, as the kill test allows,
        # so that only a change of dates or steps (differences of order 1e-3 and more) can fail it
        assert max(jax.tree.leaves(diffs)) <= 1e-6, kind
    valid = lambda d: [(r["step"], r["valid_rank_ic"]) for r in _records(d, "valid")]
    got, want = valid(runs / "cadence"), valid(base_dir)
    assert [s for s, _ in got] == [s for s, _ in want]
    np.testing.assert_allclose([v for _, v in got], [v for _, v in want], rtol=0, atol=1e-6)
    assert load_config(runs / "cadence" / "config.yaml").train.checkpoint_every == 5


def test_a_start_refused_for_its_batch_size_writes_nothing_so_the_rerun_needs_no_overwrite(
    store, runs, monkeypatch
):
    path = write_config(runs / "batch.yaml", _config(store, runs, "batch", max_steps=2, checkpoint_every=100))
    line = cli_error(["train", "--config", str(path), "train.batch_dates=1000"])
    assert "fold 0 has 120 training dates, fewer than train.batch_dates (1000)" in line
    assert not (runs / "batch").exists()
    res = runner.invoke(app, ["train", "--config", str(path)])
    assert res.exit_code == 0, res.output
    assert json.loads((runs / "batch" / "fold_0" / "summary.json").read_text())["steps"] == 2
    kept = runs / "batch" / "ablation" / "full" / "seed_0" / "config.yaml"  # ablate's: kept, with a warning
    kept.parent.mkdir(parents=True)
    kept.write_text("old")
    res = runner.invoke(app, ["train", "--config", str(path), "--overwrite"], env={"COLUMNS": "300"})
    assert res.exit_code == 0 and f"kept {runs / 'batch' / 'ablation'}" in res.output, res.output
    assert kept.read_text() == "old"
    # an overwrite trains beside the run: killed before its end, it leaves the old run as it was
    before = _tree(runs / "batch")
    old_config = (runs / "batch" / "config.yaml").read_text()
    real_fold = train.loop.train_fold

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train.loop, "train_fold", killed)
    with pytest.raises(KeyboardInterrupt):
        run_training(
            _load(_config(store, runs, "batch", max_steps=3, checkpoint_every=100), runs), overwrite=True
        )
    assert _tree(runs / "batch") == before and (runs / "batch" / "config.yaml").read_text() == old_config
    assert (runs / ".batch.overwrite" / "config.yaml").is_file()
    monkeypatch.setattr(train.loop, "train_fold", real_fold)
    res = runner.invoke(app, ["train", "--config", str(path), "--overwrite", "train.max_steps=3"])
    assert res.exit_code == 0, res.output
    assert not (runs / ".batch.overwrite").exists() and kept.read_text() == "old"
    assert json.loads((runs / "batch" / "fold_0" / "summary.json").read_text())["steps"] == 3
    assert json.loads((runs / "batch" / "summary.json").read_text())["run_dir"] == str(runs / "batch")


def test_an_empty_universe_is_refused_before_the_run_folder_is_written(store, runs):
    path = write_config(runs / "empty.yaml", _config(store, runs, "empty"))
    line = cli_error(["train", "--config", str(path), "data.min_turnover_20d=1e30"])
    assert "fold 0's training dates" in line and "hold no universe stock" in line
    assert "data.min_turnover_20d = 1e+30" in line and "data.exclude_sector9999 = True" in line
    assert not (runs / "empty").exists()


def test_resume_of_a_folder_without_a_run_names_the_folder(tmp_path):
    line = cli_error(["train", "--resume", str(tmp_path / "nonexistent")])
    assert f"{tmp_path / 'nonexistent'} is not a run folder (no config.yaml)" in line


def test_a_file_where_the_runs_folder_should_be_is_one_line(store, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    path = write_config(tmp_path / "c.yaml", run_config(store, afile, name="run"))
    line = cli_error(["train", "--config", str(path)])
    assert f"{afile} is not a folder" in line and "paths.runs" in line
    assert afile.read_text() == "mine"
