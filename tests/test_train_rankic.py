"""`rank_ic` against SciPy's Spearman correlation (average ranks for ties) over each date's masked stocks."""

from __future__ import annotations

import numpy as np
import scipy.stats

from train.metrics import rank_ic


def _scipy_ic(pred, ret, mask):
    out = []
    for p, r, m in zip(pred, ret, mask, strict=True):
        ok = m & np.isfinite(p) & np.isfinite(r)
        if ok.sum() < 2 or np.ptp(p[ok]) == 0 or np.ptp(r[ok]) == 0:
            out.append(np.nan)
        else:
            out.append(scipy.stats.spearmanr(p[ok], r[ok]).statistic)
    return np.array(out)


def test_rank_ic_matches_scipy_with_ties_masks_and_nan():
    rng = np.random.default_rng(0)
    d, n = 12, 40
    pred = rng.integers(0, 6, size=(d, n)).astype(np.float32)  # many ties
    ret = (0.3 * pred + rng.standard_normal((d, n))).astype(np.float32)
    ret[2, :5] = np.nan  # NaN returns leave the date's sample
    ret[3] = np.round(ret[3])  # ties on both sides
    mask = rng.random((d, n)) > 0.2
    mask[4] = False
    mask[4, 7] = True  # one valid stock: undefined
    pred[5] = 1.0  # constant prediction: undefined
    got = np.asarray(rank_ic(pred, ret, mask))
    want = _scipy_ic(pred, ret, mask)
    assert np.isnan(got[4]) and np.isnan(got[5])
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    # float32 sums of ~40 squared ranks (< 1e5): relative error well under 1e-5
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5, equal_nan=True)


def test_rank_ic_of_a_monotone_transform_is_one():
    x = np.array([[3.0, 1.0, 2.0, 10.0]], np.float32)
    assert float(rank_ic(x, np.exp(x), np.ones_like(x, bool))[0]) == 1.0
    assert float(rank_ic(x, -x, np.ones_like(x, bool))[0]) == -1.0
