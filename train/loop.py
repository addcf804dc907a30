"""`gogooku train`: walk-forward training on the feature store, fold by fold, with exact resume.

`run_training(cfg)` reads top to bottom: load the store onto the device, make the folds, write the run folder
(config.yaml, inputs.json, folds.json), compile one train step, then for each fold: initialise or restore the
state, loop over epochs of shuffled training dates, validate after each epoch (RankIC of the median, weighted
over horizons), keep the latest and the best checkpoint, stop early after `train.patience` evaluations
without improvement, and write the fold's summary.json.

The loop never waits on the device to log: it dispatches step t, then fetches step t-1's metrics, checks
that the loss and every module's gradient are finite and feeds the zero-gradient monitor. A checkpoint is
written only after every step before it has been checked, so a non-finite step never reaches one.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import yaml
from absl import logging as absl_logging
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from etl.errors import GogookuError
from model.config import ModelConfig
from train import checkpoint
from train.config import Config, config_dict, config_diffs, load_config, model_config
from train.data import Dataset, load_dataset
from train.runs import MODELS, SPLITS, device_name, record_stage
from train.splits import Fold, fold_records, make_folds
from train.step import (
    MODULES,
    TrainState,
    batches,
    by_date,
    compiled_train_step,
    init_distributed,
    make_mesh,
    params_init,
    replicated,
    schedule_array,
    to_mesh,
    valid_ic_step,
)

RUN_FILES = ("config.yaml", "inputs.json", "folds.json", "summary.json")
# What the project's commands write into a run folder (docs/train.md, docs/evaluate.md): --overwrite removes
# these, their leftover temporary siblings, and nothing else. Checkpoint folders are Orbax's, removed whole.
RUN_ARTIFACTS = (*RUN_FILES, "stages.json", "report.html")  # + every command's stages, gogooku report
RANKING_FILE = re.compile(r"ranking_\d{4}-\d{2}-\d{2}\.csv")  # gogooku predict's default output
FOLD_DIR = re.compile(r"fold_\d+")
FOLD_FILES = ("metrics.jsonl", "summary.json")
EVAL_FILES = ("predictions.parquet", "daily.parquet", "metrics.json", "vsn_weights.csv", "importance.csv")
TMP_FILE = re.compile(r"\.(.+?)(?:\.\d+)?\.tmp")  # write_atomic's sibling: .NAME.tmp or .NAME.PID.tmp
# Settings a resume may change: they set when lines are logged and checkpoints saved, never a parameter
# (a resume with another checkpoint_every gives bit-identical parameters and validations).
RESUME_MAY_CHANGE = ("train.log_every", "train.checkpoint_every")
absl_logging.set_verbosity(absl_logging.ERROR)  # Orbax's info and timing chatter


class TrainingError(GogookuError):
    """A run that cannot go on (non-finite loss or gradients); the last good checkpoint stays."""


@dataclass
class ZeroGradMonitor:
    """Counts, per module, the consecutive steps whose gradient norm is exactly 0; warns once at `limit`."""

    limit: int
    runs: dict[str, int] = field(default_factory=dict)
    warned: list[str] = field(default_factory=list)

    def update(self, norms: dict[str, float]) -> list[str]:
        """Feed one step's per-module norms; return the modules that just reached the limit."""
        fired = []
        for module, norm in norms.items():
            self.runs[module] = self.runs.get(module, 0) + 1 if norm == 0.0 else 0
            if self.runs[module] >= self.limit and module not in self.warned:
                self.warned.append(module)
                fired.append(module)
        return fired


def write_atomic(path: Path, text: str) -> None:
    """Write a file through a temporary sibling and a rename: a reader never sees half of it."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class MetricsLog:
    """metrics.jsonl of a fold: one JSON object per line (train logs, validations, warnings)."""

    def __init__(self, path: Path, keep_until_step: int | None) -> None:
        self.path = path
        if keep_until_step is None:
            write_atomic(path, "")
        elif path.exists():  # a resumed fold: drop what was logged after the restored step
            kept = [ln for ln in path.read_text().splitlines() if json.loads(ln)["step"] <= keep_until_step]
            write_atomic(path, "".join(ln + "\n" for ln in kept))
        self._file = path.open("a")

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class Reporter:
    """A Rich progress bar on a terminal, plain periodic lines otherwise."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = console.is_terminal
        self.progress: Progress | None = None
        self.task: Any = None

    def start_fold(self, fold: int, n_folds: int, total: int, done: int) -> None:
        self.fold, self.n_folds, self.total = fold, n_folds, total
        if self.live:
            self.progress = Progress(
                TextColumn("[bold]fold {task.fields[fold]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task(
                "train", total=total, completed=done, fold=f"{fold + 1}/{n_folds}", stats=""
            )

    def update(self, step: int, text: str, log_line: bool) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=step, stats=text)
        elif log_line:
            self.console.print(
                f"fold {self.fold + 1}/{self.n_folds} step {step}/{self.total} {text}", highlight=False
            )

    def note(self, text: str) -> None:
        self.console.print(text, highlight=False)

    def end_fold(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


@dataclass
class Run:
    """What every fold shares: config, data, model config, mesh, optimizer and the compiled step."""

    cfg: Config
    ds: Dataset
    model_cfg: ModelConfig
    mesh: Any
    tx: Any
    step_fn: Any
    init_fn: Any  # key -> fresh parameters (one compilation for every fold)
    run_dir: Path
    reporter: Reporter


def epoch_order(train_dates: np.ndarray, seed: int, fold: int, epoch: int) -> np.ndarray:
    """The training dates of one epoch in shuffled order: a pure function of (seed, fold, epoch)."""
    return np.random.default_rng([seed, fold, epoch]).permutation(train_dates)


def label_dates(train_dates: np.ndarray, n_dates: int, seed: int, fold: int, shuffle: bool) -> np.ndarray:
    """For every date, the date whose labels train it: itself, or (placebo) another training date."""
    out = np.arange(n_dates, dtype=np.int64)
    if shuffle:
        out[train_dates] = np.random.default_rng([seed, fold, 1_000_003]).permutation(train_dates)
    return out


def validate(run: Run, params: Any, dates: np.ndarray) -> dict[str, Any]:
    """Validation RankIC per horizon (mean over dates) and the early-stopping objective: their mean
    weighted by the loss's horizon weights."""
    b = run.cfg.train.batch_dates
    outs = [(valid_ic_step(params, run.ds.arrays, idx, cfg=run.model_cfg), n) for idx, n in batches(dates, b)]
    ic_DH = np.concatenate([np.asarray(out)[:n] for out, n in outs])
    with np.errstate(invalid="ignore"):
        ic_H = np.array([np.nanmean(c) if np.isfinite(c).any() else np.nan for c in ic_DH.T])
    w_H = np.asarray(run.model_cfg.loss.horizon_weights) * np.isfinite(ic_H)
    objective = float(np.nansum(ic_H * w_H) / w_H.sum()) if w_H.sum() > 0 else float("nan")
    horizons = run.model_cfg.horizons
    return {
        "valid_rank_ic": objective,
        "valid_rank_ic_h": {str(h): float(v) for h, v in zip(horizons, ic_H, strict=True)},
        "valid_dates": int(ic_DH.shape[0]),
    }


def _fresh_state(run: Run, fold: Fold) -> TrainState:
    seed = run.cfg.train.seed
    params = run.init_fn(jax.random.key(seed + fold.index))
    rng = jax.random.key_data(jax.random.fold_in(jax.random.key(seed), 1_000 + fold.index))
    state = TrainState(np.zeros((), np.int32), params, run.tx.init(params), rng)
    rep = replicated(run.mesh)
    return jax.tree.map(lambda a: to_mesh(np.asarray(a), rep), state)


def train_fold(run: Run, fold: Fold, n_folds: int) -> dict[str, Any]:
    """Train one fold to its end (early stopping, max epochs or max steps); its summary record."""
    cfg, tc, ds = run.cfg, run.cfg.train, run.ds
    fold_dir = run.run_dir / f"fold_{fold.index}"
    fold_dir.mkdir(parents=True, exist_ok=True)
    b = tc.batch_dates
    steps_per_epoch = fold.train.size // b  # >= 1: _check_folds
    total = steps_per_epoch * tc.max_epochs
    total = min(total, tc.max_steps) if tc.max_steps else total
    managers = checkpoint.managers(fold_dir)
    rep = replicated(run.mesh)
    restored = checkpoint.restore(managers["latest"], checkpoint.abstract_state(run.model_cfg, tc, rep))
    where = f"{fold_dir / 'latest'}"
    if restored is None:
        state, meta = _fresh_state(run, fold), None
    else:
        state, meta = restored
        checkpoint.check_compatible(meta, ds.input_hash, len(ds.input_names), run.model_cfg, where)
    step = int(jax.device_get(state.step))
    cur = meta or {}
    epoch, position = cur.get("epoch", 0), cur.get("position", 0)
    best, best_step = cur.get("best_objective", -math.inf), cur.get("best_step")
    since_best, evaluated_at = cur.get("evals_since_best", 0), cur.get("evaluated_at", -1)
    best_valid = cur.get("best_valid")
    monitor = ZeroGradMonitor(tc.zero_grad_steps, dict(cur.get("zero_runs", {})), list(cur.get("warned", [])))
    log = MetricsLog(fold_dir / "metrics.jsonl", None if meta is None else step)
    labels = label_dates(fold.train, len(ds.dates), tc.seed, fold.index, tc.shuffle_targets)
    schedule_3 = to_mesh(schedule_array(tc, total), rep)
    dates_sharding = by_date(run.mesh)
    reporter = run.reporter
    reporter.start_fold(fold.index, n_folds, total, step)
    if meta is not None:
        reporter.note(f"fold {fold.index}: resumed at step {step} (epoch {epoch}, position {position})")
    last = {"loss": float("nan"), "valid": best if best > -math.inf else float("nan")}
    clock = {"t": time.perf_counter(), "steps": 0}

    def meta_now() -> dict[str, Any]:
        return {
            "fold": fold.index,
            "step": step,
            "epoch": epoch,
            "position": position,
            "total_steps": total,
            "best_objective": best,
            "best_step": best_step,
            "best_valid": best_valid,
            "evals_since_best": since_best,
            "evaluated_at": evaluated_at,
            "zero_runs": monitor.runs,
            "warned": monitor.warned,
            "input_hash": ds.input_hash,
            "n_inputs": len(ds.input_names),
            "model": checkpoint.model_dict(run.model_cfg),
            "config": config_dict(cfg),
        }

    def check(step_no: int, metrics: Any) -> None:
        m = {k: float(v) for k, v in jax.device_get(metrics).items()}
        norms = {mod: m[f"grad_norm/{mod}"] for mod in MODULES if f"grad_norm/{mod}" in m}
        if not (math.isfinite(m["loss"]) and math.isfinite(m["grad_norm"])):
            bad = [mod for mod, v in norms.items() if not math.isfinite(v)]
            saved = managers["latest"].latest_step()
            raise TrainingError(
                f"fold {fold.index}, step {step_no}: non-finite loss ({m['loss']}) or gradients "
                f"(modules: {', '.join(bad) or 'none; the loss itself'}); the last good checkpoint is "
                + (
                    f"{fold_dir / 'latest'} at step {saved}"
                    if saved is not None
                    else "none (no step was saved)"
                )
            )
        for module in monitor.update(norms):
            text = (
                f"fold {fold.index}, step {step_no}: the gradient of module '{module}' has been exactly 0 "
                f"for {tc.zero_grad_steps} steps: it is not learning"
            )
            log.write(
                {"kind": "warning", "fold": fold.index, "step": step_no, "module": module, "message": text}
            )
            reporter.note(f"[yellow]warning:[/] {text}")
        last["loss"] = m["loss"]
        clock["steps"] += 1
        log_line = step_no % tc.log_every == 0 or step_no == total
        if log_line:
            elapsed = time.perf_counter() - clock["t"]
            dps = clock["steps"] * b / elapsed if elapsed > 0 else float("nan")
            log.write(
                {
                    "kind": "train",
                    "fold": fold.index,
                    "step": step_no,
                    "epoch": epoch,
                    **m,
                    "dates_per_s": dps,
                }
            )
            clock["t"], clock["steps"] = time.perf_counter(), 0
            last["dps"] = dps
        valid = "  -    " if np.isnan(last["valid"]) else f"{last['valid']:+.4f}"  # before the first
        speed = f"  {last['dps']:.1f} dates/s" if "dps" in last else ""
        text = f"loss {last['loss']:.4f}  valid IC {valid}{speed}"
        reporter.update(step_no, text, log_line)

    pending: tuple[int, Any] | None = None

    def flush() -> None:
        nonlocal pending
        if pending is not None:
            check(*pending)
            pending = None

    best_kept: tuple[TrainState, dict[str, Any]] | None = None  # the best state since the last save

    def save_latest() -> None:
        """Check every dispatched step, save the state as 'latest' and a newer best state as 'best'."""
        nonlocal best_kept
        flush()
        if managers["latest"].latest_step() != step:
            checkpoint.save(managers["latest"], step, state, meta_now())
        if best_kept is not None:
            checkpoint.save(managers["best"], best_kept[1]["step"], *best_kept)
            best_kept = None

    stop = None
    try:
        while stop is None:
            if tc.patience and since_best >= tc.patience:
                stop = "early_stopping"
                break
            if step >= total:
                stop = "max_epochs" if total == steps_per_epoch * tc.max_epochs else "max_steps"
                if evaluated_at == step:
                    break
            order = epoch_order(fold.train, tc.seed, fold.index, epoch)
            while position < steps_per_epoch and step < total:
                idx = order[position * b : (position + 1) * b].astype(np.int32)
                d = to_mesh(idx, dates_sharding)
                lab = to_mesh(labels[idx].astype(np.int32), dates_sharding)
                state, metrics = run.step_fn(state, ds.arrays, d, lab, schedule_3)
                step, position = step + 1, position + 1
                if pending is not None:
                    check(*pending)
                pending = (step, metrics)
                if step % tc.checkpoint_every == 0:
                    save_latest()
            flush()
            if position == steps_per_epoch:
                epoch, position = epoch + 1, 0
            t0 = time.perf_counter()
            valid = validate(run, state.params, fold.valid)
            evaluated_at = step
            improved = valid["valid_rank_ic"] > best
            if improved:
                best, best_step, best_valid, since_best = valid["valid_rank_ic"], step, valid, 0
                best_kept = (jax.tree.map(jnp.copy, state), meta_now())
            else:
                since_best += 1
            last["valid"] = valid["valid_rank_ic"]
            log.write(
                {
                    "kind": "valid",
                    "fold": fold.index,
                    "step": step,
                    "epoch": epoch,
                    **valid,
                    "best": best,
                    "improved": improved,
                    "seconds": time.perf_counter() - t0,
                }
            )
            clock["t"], clock["steps"] = time.perf_counter(), 0
        save_latest()
        for manager in managers.values():
            manager.wait_until_finished()
    finally:
        reporter.end_fold()
        log.close()
        for manager in managers.values():
            manager.close()
    summary = {
        "fold": fold.index,
        "stop": stop,
        "steps": step,
        "epochs_done": epoch,
        "total_steps": total,
        "best_step": best_step,
        "best_valid_rank_ic": best,
        "best_valid": best_valid,
        "zero_gradient_warnings": monitor.warned,
        "train_dates": int(fold.train.size),
        "valid_dates": int(fold.valid.size),
        "test_dates": int(fold.test.size),
    }
    write_atomic(fold_dir / "summary.json", json.dumps(summary, indent=1))
    return summary


def resume_folder(path: str | Path) -> Path:
    """The run folder `--resume` names, refused in one line when it holds no config.yaml (checked before
    the config is read from it, so the error names the folder rather than a missing file)."""
    if not (Path(path) / "config.yaml").is_file():
        raise GogookuError(
            f"{path} is not a run folder (no config.yaml): --resume takes a folder gogooku train wrote "
            "(paths.runs/train.name)"
        )
    return Path(path)


def _check_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Refuse a place where a fresh run cannot go: under a file, a non-empty folder that holds no run, or a
    run without `overwrite`. Writes nothing, so it runs before the store loads and again just before use."""
    for path in (run_dir, *run_dir.parents):
        if path.exists() or path.is_symlink():
            if not path.is_dir():
                raise GogookuError(
                    f"{path} is not a folder, so the run folder {run_dir} cannot be made "
                    "(check paths.runs and train.name)"
                )
            break
    if run_dir.is_dir() and any(run_dir.iterdir()):
        if not (run_dir / "config.yaml").is_file():
            raise GogookuError(
                f"{run_dir} exists and is not a run folder (no config.yaml): choose train.name"
            )
        if not overwrite:
            raise GogookuError(
                f"{run_dir} already holds a run: continue it with --resume {run_dir}, replace it with "
                "--overwrite, or choose another train.name"
            )


def _remove_files(folder: Path, names: tuple[str, ...], pattern: re.Pattern[str] | None = None) -> None:
    """Remove the plain files of `folder` named in `names` (or matching `pattern`), and their temporary
    siblings a killed write left."""
    if not folder.is_dir() or folder.is_symlink():
        return
    for path in folder.iterdir():
        tmp = TMP_FILE.fullmatch(path.name)
        name = tmp.group(1) if tmp else path.name
        if (
            (name in names or (pattern and pattern.fullmatch(name)))
            and path.is_file()
            and not path.is_symlink()
        ):
            path.unlink()


def _subfolders(folder: Path, pattern: re.Pattern[str]) -> list[Path]:
    if not folder.is_dir() or folder.is_symlink():
        return []
    return [p for p in folder.iterdir() if pattern.fullmatch(p.name) and p.is_dir() and not p.is_symlink()]


def _remove_if_empty(folder: Path) -> None:
    if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
        folder.rmdir()


def remove_run_artifacts(run_dir: Path) -> None:
    """Remove what the project's commands write into a run folder: train's records and fold_<k>/,
    stages.json, eval/<split>/<model>/'s files, report.html and predict's ranking_<date>.csv. A file the
    project did not write stays where it is, and so does every folder that still holds one: --overwrite must
    not lose the user's files. ablate's ablation/ stays too: hours of runs, each with its own config.yaml
    (run_training warns that they were made with the replaced run's config)."""
    _remove_files(run_dir, RUN_ARTIFACTS, RANKING_FILE)
    for fold_dir in _subfolders(run_dir, FOLD_DIR):
        _remove_files(fold_dir, FOLD_FILES)
        for kind in checkpoint.KINDS:
            if (fold_dir / kind).is_dir() and not (fold_dir / kind).is_symlink():
                shutil.rmtree(fold_dir / kind)
        _remove_if_empty(fold_dir)
    for split in SPLITS:
        for model in MODELS:
            _remove_files(run_dir / "eval" / split / model, EVAL_FILES)
            _remove_if_empty(run_dir / "eval" / split / model)
        _remove_if_empty(run_dir / "eval" / split)
    _remove_if_empty(run_dir / "eval")


def staging_dir(run_dir: Path) -> Path:
    """Where `--overwrite` trains: a hidden sibling of the run folder, moved into place once every fold is
    done, so an interrupted overwrite leaves the old run as it was (rerunning the command starts over)."""
    return run_dir.parent / f".{run_dir.name}.overwrite"


def _move_into(src: Path, dst: Path) -> None:
    """Rename `src` to `dst`; into a folder that already exists (it kept a user's file), entry by entry."""
    if src.is_dir() and dst.is_dir() and not dst.is_symlink():
        for path in src.iterdir():
            _move_into(path, dst / path.name)
        src.rmdir()
    else:
        os.replace(src, dst)


def _replace_run(staging: Path, run_dir: Path) -> None:
    """Put a finished overwrite in place: the old run's artifacts go (only what the project wrote,
    `remove_run_artifacts`), then the new run's entries are renamed in."""
    remove_run_artifacts(run_dir)
    _move_into(staging, run_dir)


def _prepare_run_dir(run_dir: Path, overwrite: bool) -> None:
    """A fresh run folder. An existing run (config.yaml inside) is replaced only with `overwrite`, and then
    only what the project wrote there is removed (`remove_run_artifacts`); any other non-empty folder is
    refused."""
    _check_run_dir(run_dir, overwrite)
    if run_dir.is_dir():
        remove_run_artifacts(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise GogookuError(f"cannot make the run folder {run_dir}: {err.strerror}") from None


def _check_folds(ds: Dataset, folds: list[Fold], batch_dates: int) -> None:
    """Refuse folds that cannot train, before anything is written: a rerun with other settings then needs no
    --overwrite. A fold needs a batch of training dates and a universe to rank on its training and
    validation dates."""
    for fold in folds:
        if fold.train.size < batch_dates:
            raise GogookuError(
                f"fold {fold.index} has {fold.train.size} training dates, fewer than train.batch_dates "
                f"({batch_dates})"
            )
        ds.check_universe(fold.train, f"fold {fold.index}'s training dates")
        ds.check_universe(fold.valid, f"fold {fold.index}'s validation dates")


def _check_resume(run_dir: Path, cfg: Config, ds: Dataset, folds_json: list[dict[str, Any]]) -> None:
    """Refuse to continue a run with other inputs, another model config, other train or data settings (but
    those in RESUME_MAY_CHANGE) or other folds, saying which: a resume must equal the uninterrupted run."""
    saved = json.loads((run_dir / "inputs.json").read_text())
    if saved["input_hash"] != ds.input_hash:
        gone = [n for n in saved["inputs"] if n not in ds.input_names]
        new = [n for n in ds.input_names if n not in saved["inputs"]]
        raise checkpoint.CheckpointMismatch(
            f"{run_dir} was trained on another input list ({len(saved['inputs'])} inputs; now "
            f"{len(ds.input_names)}; missing now: {', '.join(gone[:5]) or '-'}; "
            f"new: {', '.join(new[:5]) or '-'}"
            f"{'' if gone or new else '; same names, other order'})"
        )
    saved_cfg = load_config(run_dir / "config.yaml")
    want = checkpoint.model_dict(model_config(saved_cfg))
    have = checkpoint.model_dict(model_config(cfg))
    diffs = config_diffs(want, have)
    if diffs:
        raise checkpoint.CheckpointMismatch(
            f"{run_dir} has another model config (run vs now): {'; '.join(diffs)}"
        )
    sections = lambda c: {k: v for k, v in config_dict(c).items() if k in ("train", "data")}
    # data.inputs: the input hash above decides (another spelling of the same list is the same run)
    changed = config_diffs(sections(saved_cfg), sections(cfg), skip=(*RESUME_MAY_CHANGE, "data.inputs"))
    if changed:
        raise GogookuError(
            f"{run_dir} was trained with other train/data settings (run vs now): {'; '.join(changed)}; a "
            f"resume continues the run as it was (only {', '.join(RESUME_MAY_CHANGE)} may change): drop "
            "these overrides, or start another run (another train.name or --overwrite)"
        )
    if json.loads((run_dir / "folds.json").read_text()) != folds_json:
        raise GogookuError(f"{run_dir}: train.folds (or the store's dates) differ from the run's folds.json")


def run_training(
    cfg: Config, *, resume: str | Path | None = None, overwrite: bool = False, console: Console | None = None
) -> dict[str, Any]:
    """Train every fold of `cfg` into paths.runs/train.name (or continue the run folder `resume`)."""
    console = console or Console(stderr=True)
    started = time.perf_counter()
    if resume is not None:
        run_dir = resume_folder(resume)
    else:  # refused before the store loads; checked again, with the folds, before anything is written
        run_dir = Path(cfg.paths.runs) / cfg.train.name
        _check_run_dir(run_dir, overwrite)
    init_distributed()
    if not jax.config.jax_compilation_cache_dir:  # compiled steps persist: a rerun or resume skips XLA
        jax.config.update("jax_compilation_cache_dir", str(Path(cfg.paths.runs).absolute() / ".jax_cache"))
    mesh = make_mesh(cfg.device)
    if cfg.train.batch_dates % mesh.size:
        raise GogookuError(
            f"train.batch_dates = {cfg.train.batch_dates} must be a multiple of the {mesh.size} devices"
        )
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("load the feature store", total=None)
        ds = load_dataset(
            cfg,
            sharding=replicated(mesh),
            progress=lambda stage, done, total: bar.update(task, completed=done, total=total),
        )
    cfg = replace(cfg, model=replace(cfg.model, n_features=len(ds.input_names)))
    model_cfg = model_config(cfg)
    folds = make_folds(
        len(ds.dates), cfg.train.folds, max_horizon=max(model_cfg.horizons), first=model_cfg.lookback - 1
    )
    _check_folds(ds, folds, cfg.train.batch_dates)
    folds_json = fold_records(folds, ds.dates)
    final_dir = run_dir
    if resume is not None:
        _check_resume(run_dir, cfg, ds, folds_json)
    else:
        if (final_dir / "config.yaml").is_file():  # --overwrite (checked): the old run stays until the end
            run_dir = staging_dir(final_dir)
            remove_run_artifacts(run_dir)  # a killed overwrite's leftovers
            _remove_if_empty(run_dir)
        _prepare_run_dir(run_dir, overwrite=False)
        write_atomic(run_dir / "inputs.json", json.dumps(ds.inputs_record(), indent=1))
        write_atomic(run_dir / "folds.json", json.dumps(folds_json, indent=1))
    write_atomic(run_dir / "config.yaml", yaml.safe_dump(config_dict(cfg), sort_keys=False))
    console.print(
        f"train: {len(ds.dates)} sessions x {ds.n_pad} slots x {len(ds.input_names)} inputs "
        f"({ds.settings['panel_dtype']}), Epad {ds.e_pad}, {len(folds)} folds, {mesh.size} "
        f"{mesh.devices.flat[0].platform} device(s) -> {final_dir}"
        + (f" (trained in {run_dir}, moved there when done)" if run_dir != final_dir else ""),
        highlight=False,
    )
    tx, step_fn = compiled_train_step(model_cfg, cfg.train.clip_norm, cfg.train.weight_decay, mesh)
    run = Run(cfg, ds, model_cfg, mesh, tx, step_fn, params_init(model_cfg), run_dir, Reporter(console))
    summaries = []
    for fold in folds:
        done = run_dir / f"fold_{fold.index}" / "summary.json"
        if done.is_file():
            summaries.append(json.loads(done.read_text()))
            continue
        t0 = time.perf_counter()
        summary = train_fold(run, fold, len(folds))
        h1 = (summary["best_valid"] or {}).get("valid_rank_ic_h", {}).get(str(model_cfg.horizons[0]))
        h1_text = "-" if h1 is None else f"{h1:+.4f}"
        console.print(
            f"fold {fold.index}: {summary['stop']} after {summary['steps']} steps in "
            f"{time.perf_counter() - t0:.0f}s; best validation RankIC {summary['best_valid_rank_ic']:+.4f} "
            f"(h={model_cfg.horizons[0]}: {h1_text}) at step {summary['best_step']}",
            highlight=False,
        )
        summaries.append(summary)
    best = [s["best_valid_rank_ic"] for s in summaries]
    h1s = [
        (s["best_valid"] or {}).get("valid_rank_ic_h", {}).get(str(model_cfg.horizons[0])) for s in summaries
    ]
    result = {
        "run_dir": str(final_dir),
        "folds": summaries,
        "mean_best_valid_rank_ic": float(np.mean(best)),
        f"mean_best_valid_rank_ic_h{model_cfg.horizons[0]}": float(
            np.mean([v for v in h1s if v is not None])
        ),
        "seconds": time.perf_counter() - started,
    }
    write_atomic(run_dir / "summary.json", json.dumps(result, indent=1))
    record_stage(run_dir, "train", result["seconds"], device_name(mesh.devices.flat[0]))
    if run_dir != final_dir:
        _replace_run(run_dir, final_dir)
        if (final_dir / "ablation").is_dir():
            console.print(
                f"[yellow]warning:[/] kept {final_dir / 'ablation'}: its runs were made with the replaced "
                "run's config, and `gogooku ablate` skips those evaluated: remove it to redo them",
                highlight=False,
            )
    return result
