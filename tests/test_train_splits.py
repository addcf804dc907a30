"""Walk-forward folds: purge, embargo and test coverage (hypothesis), and one fold table worked by hand."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etl.errors import GogookuError
from train.config import FoldsConfig
from train.splits import make_folds


def test_a_fold_table_worked_by_hand():
    # n=100, first=2: test0 = 2 + 30 + 10 + 2*5 = 52; valid [37, 47), train [2, 32);
    # purge H=10: train t + 10 < 37 -> t <= 26; valid t + 10 < 52 -> t <= 41
    cfg = FoldsConfig(train_sessions=30, valid_sessions=10, test_sessions=20, embargo=5)
    folds = make_folds(100, cfg, max_horizon=10, first=2)
    assert [(f.train[0], f.train[-1], f.valid[0], f.valid[-1], f.test[0], f.test[-1]) for f in folds] == [
        (2, 26, 37, 41, 52, 71),
        (2, 46, 57, 61, 72, 91),
        (2, 66, 77, 81, 92, 99),
    ]
    rolling = make_folds(100, FoldsConfig("rolling", 30, 10, 20, 5), max_horizon=3, first=2)
    assert [(f.train[0], f.train[-1]) for f in rolling] == [(2, 31), (22, 51), (42, 71)]


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(50, 700),
    first=st.integers(0, 30),
    train=st.integers(1, 200),
    valid=st.integers(1, 60),
    test=st.integers(1, 90),
    embargo=st.integers(0, 30),
    horizon=st.integers(1, 15),
    rolling=st.booleans(),
    max_folds=st.integers(0, 4),
)
def test_folds_never_let_a_label_window_reach_a_later_segment(
    n, first, train, valid, test, embargo, horizon, rolling, max_folds
):
    cfg = FoldsConfig(
        mode="rolling" if rolling else "expanding",
        train_sessions=train,
        valid_sessions=valid,
        test_sessions=test,
        embargo=embargo,
        max_folds=max_folds,
    )
    try:
        folds = make_folds(n, cfg, max_horizon=horizon, first=first)
    except GogookuError:  # too short a store, or a purge that empties a segment: both must be the reason
        short = first + train + valid + 2 * embargo >= n
        emptied = horizon >= embargo + min(train, valid)
        assert short or emptied
        return
    gap = max(embargo, horizon)  # sessions strictly between segments: the embargo unless the purge is longer
    for f in folds:
        for seg in (f.train, f.valid, f.test):
            assert seg.size and np.all(np.diff(seg) == 1) and seg[0] >= first and seg[-1] < n
        assert f.train[-1] + horizon < f.valid[0] and f.valid[-1] + horizon < f.test[0]
        assert f.valid[0] - f.train[-1] - 1 == gap
        assert f.test[0] - f.valid[-1] - 1 == gap
        assert f.train[0] == (first if not rolling else f.valid[0] - embargo - train)
    tests = np.concatenate([f.test for f in folds])
    assert np.all(np.diff(tests) == 1)  # disjoint and contiguous: they tile the evaluated period
    assert tests[0] == first + train + valid + 2 * embargo
    assert tests[-1] == n - 1 or (max_folds and len(folds) == max_folds)


def test_default_embargo_is_exactly_twenty_sessions():
    folds = make_folds(1218, FoldsConfig(), max_horizon=10, first=19)
    assert len(folds) == 5
    for f in folds:
        assert f.valid[0] - f.train[-1] - 1 == 20 and f.test[0] - f.valid[-1] - 1 == 20


def test_too_short_a_store_is_one_clear_error():
    with pytest.raises(GogookuError, match="the store has 100 sessions"):
        make_folds(100, FoldsConfig(), max_horizon=10, first=19)


def test_a_lookback_longer_than_the_store_says_so():
    with pytest.raises(GogookuError, match=r"model.lookback = 1300 sessions is longer than the store \(1218"):
        make_folds(1218, FoldsConfig(), max_horizon=10, first=1299)
