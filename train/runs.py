"""The run folder that `gogooku train` writes and every later command reads (docs/evaluate.md).

A run is a folder of named artifacts: config.yaml, inputs.json, folds.json, stages.json, fold_<k>/ and
eval/<split>/<model>/. This module holds the rules they share: which folds a config makes on a store, how a
command checks that a run folder is whole and still fits the store, and how a command adds its entry to
stages.json. Nothing here imports JAX.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from etl.errors import GogookuError
from etl.files import write_atomic
from train.config import Config, config_dict, load_config
from train.splits import Fold, fold_records, make_folds

SPLITS = ("test", "valid")
MODELS = ("atft", "lightgbm", "oracle", "reversal_5d")


def run_folds(cfg: Config, n_dates: int) -> list[Fold]:
    """The walk-forward folds of `cfg` over a store of `n_dates` sessions, as `gogooku train` makes them:
    labels reach the longest horizon ahead; the first date with a full lookback window is the first used."""
    return make_folds(
        n_dates, cfg.train.folds, max_horizon=max(cfg.model.horizons), first=cfg.model.lookback - 1
    )


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise GogookuError(f"--split {split}: expected one of {', '.join(SPLITS)}")
    return split


def split_dates(fold: Fold, split: str) -> Any:
    """A fold's date indices of the split ('test' or 'valid')."""
    return fold.test if check_split(split) == "test" else fold.valid


@dataclass
class RunFolder:
    """A run folder's config and records, read and checked."""

    path: Path
    cfg: Config
    inputs: dict[str, Any]
    folds_json: list[dict[str, Any]]

    def fold_dir(self, k: int) -> Path:
        return self.path / f"fold_{k}"

    def eval_dir(self, split: str, model: str) -> Path:
        return self.path / "eval" / split / model


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise GogookuError(f"{path}: not readable as JSON ({err})".splitlines()[0]) from None


def open_run(run_dir: str | Path, overrides: list[str] | None = None) -> RunFolder:
    """The run folder's config (with `eval.key=value` overrides), inputs.json and folds.json; a missing or
    incomplete folder is one GogookuError that says which file is missing and what writes it."""
    path = Path(run_dir)
    if not path.is_dir():
        raise GogookuError(f"--run {path}: no such run folder (gogooku train writes one under paths.runs)")
    for name in ("config.yaml", "inputs.json", "folds.json"):
        if not (path / name).is_file():
            raise GogookuError(
                f"--run {path}: not a complete run folder (no {name}); `gogooku train` writes it"
            )
    bad = [o for o in overrides or [] if not o.startswith("eval.")]
    if bad:
        raise GogookuError(
            f"override {bad[0]!r}: only eval.key=value may change here; the rest of the config is the run's "
            f"({path / 'config.yaml'})"
        )
    cfg = load_config(path / "config.yaml", list(overrides or []))
    inputs, folds_json = _read_json(path / "inputs.json"), _read_json(path / "folds.json")
    if not isinstance(inputs, dict) or "input_hash" not in inputs or not isinstance(folds_json, list):
        raise GogookuError(f"--run {path}: inputs.json or folds.json is not what gogooku train writes")
    return RunFolder(path, cfg, inputs, folds_json)


def check_inputs(run: RunFolder, input_hash: str) -> None:
    """Refuse a store that no longer gives the run's input list (inputs.json)."""
    if input_hash != run.inputs["input_hash"]:
        raise GogookuError(
            f"{run.path}: the feature store at {run.cfg.paths.features} no longer gives the run's input list "
            "(inputs.json): use the store and data.inputs the run was trained on"
        )


def check_store(run: RunFolder, input_hash: str, dates: Any) -> list[Fold]:
    """The run's folds on the store now, after checking that the store still gives the run's inputs and
    folds (the folds depend on the store's sessions; a store rebuilt over another period moves them)."""
    check_inputs(run, input_hash)
    folds = run_folds(run.cfg, len(dates))
    if fold_records(folds, dates) != run.folds_json:
        raise GogookuError(
            f"{run.path}: the feature store's sessions ({dates[0]}..{dates[-1]}, {len(dates)}) give other "
            "folds than the run's folds.json: use the store the run was trained on"
        )
    return folds


def start_run_folder(run_dir: Path, cfg: Config, inputs_record: dict[str, Any], folds_json: list) -> None:
    """Write config.yaml, inputs.json and folds.json as `gogooku train` does, for a command that runs before
    training (the baseline); `gogooku train --resume` continues such a folder."""
    write_atomic(run_dir / "inputs.json", json.dumps(inputs_record, indent=1))
    write_atomic(run_dir / "folds.json", json.dumps(folds_json, indent=1))
    write_atomic(run_dir / "config.yaml", yaml.safe_dump(config_dict(cfg), sort_keys=False))


def record_stage(run_dir: str | Path, stage: str, wall_s: float, device: str) -> None:
    """Add (or replace) `stage`'s entry in stages.json: wall time, device and when it finished."""
    path = Path(run_dir) / "stages.json"
    stages = _read_json(path) if path.is_file() else {}
    if not isinstance(stages, dict):
        raise GogookuError(f"{path}: expected a JSON object of stages")
    stages[stage] = {
        "wall_s": round(float(wall_s), 3),
        "device": device,
        "finished": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    write_atomic(path, json.dumps(stages, indent=1))


def device_name(device: Any) -> str:
    """A JAX device as stages.json names it: 'cpu', or 'gpu (NVIDIA H100 80GB HBM3)'."""
    return "cpu" if device.platform == "cpu" else f"{device.platform} ({device.device_kind})"
