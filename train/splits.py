"""Walk-forward folds over the store's sessions: train | embargo | valid | embargo | test, purged.

Fold k's test segment starts `k * test_sessions` after the first fold's, so test segments never overlap and
tile the evaluated period up to the last session (the last one may be shorter). Before each test segment lie
`embargo` sessions, then the validation segment; before that, `embargo` sessions, then training: from the
first usable session (expanding) or the last `train_sessions` sessions (rolling).

Purge: a date t is labelled by returns over t+1 .. t+H (H = the longest horizon). Training dates with
t + H >= the first validation date, and validation dates with t + H >= the first test date, are dropped, so no
label window reaches a later segment. With embargo >= H (the default: 20 vs 10) the purge drops nothing and
exactly `embargo` sessions separate the segments. Lookback windows read only sessions <= t (train/data.py),
which may lie before a segment's first date, never after its last.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from etl.errors import GogookuError
from train.config import FoldsConfig


@dataclass(frozen=True)
class Fold:
    """Date indices (into the store's sessions, ascending) of one fold's three segments."""

    index: int
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray


def _purged(start: int, stop: int, horizon: int, next_start: int) -> np.ndarray:
    """Dates start..stop-1 whose label window t+1..t+horizon ends before `next_start`."""
    return np.arange(start, min(stop, next_start - horizon), dtype=np.int64)


def make_folds(n_dates: int, cfg: FoldsConfig, *, max_horizon: int, first: int = 0) -> list[Fold]:
    """The walk-forward folds over `n_dates` sessions; dates before `first` (no full lookback) are unused."""
    if first >= n_dates:
        raise GogookuError(
            f"model.lookback = {first + 1} sessions is longer than the store ({n_dates} sessions): "
            "shorten the lookback or use a longer store"
        )
    span = cfg.train_sessions + cfg.valid_sessions + 2 * cfg.embargo
    test0 = first + span
    if test0 >= n_dates:
        raise GogookuError(
            f"the store has {n_dates} sessions, {n_dates - first} usable after the lookback; the first fold "
            f"needs train {cfg.train_sessions} + valid {cfg.valid_sessions} + 2 x embargo {cfg.embargo} "
            "sessions before its test segment: shorten train.folds or use a longer store"
        )
    folds = []
    for k, test_start in enumerate(range(test0, n_dates, cfg.test_sessions)):
        if cfg.max_folds and k == cfg.max_folds:
            break
        valid_stop = test_start - cfg.embargo
        valid_start = valid_stop - cfg.valid_sessions
        train_stop = valid_start - cfg.embargo
        train_start = first if cfg.mode == "expanding" else train_stop - cfg.train_sessions
        folds.append(
            Fold(
                index=k,
                train=_purged(train_start, train_stop, max_horizon, valid_start),
                valid=_purged(valid_start, valid_stop, max_horizon, test_start),
                test=np.arange(test_start, min(test_start + cfg.test_sessions, n_dates), dtype=np.int64),
            )
        )
    for f in folds:
        if not (f.train.size and f.valid.size):
            raise GogookuError(
                f"fold {f.index}: the purge (labels reach {max_horizon} sessions ahead) leaves no "
                f"{'training' if not f.train.size else 'validation'} dates; raise train.folds.embargo to "
                f"at least {max_horizon} or lengthen the segments"
            )
    return folds


def fold_records(folds: list[Fold], dates: np.ndarray) -> list[dict[str, Any]]:
    """Per fold and segment: first and last date and the session count (folds.json, `gogooku folds`)."""
    out = []
    for f in folds:
        rec: dict[str, Any] = {"fold": f.index}
        for name in ("train", "valid", "test"):
            idx = getattr(f, name)
            rec[name] = {
                "first": str(dates[idx[0]]) if idx.size else None,
                "last": str(dates[idx[-1]]) if idx.size else None,
                "sessions": int(idx.size),
                "first_index": int(idx[0]) if idx.size else None,
                "last_index": int(idx[-1]) if idx.size else None,
            }
        out.append(rec)
    return out
