"""FAN: exact decomposition, the kept bins match a NumPy FFT reference, masked values cannot leak in."""

import jax
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from model.fan import fan_decompose, fan_inputs

_decompose = jax.jit(fan_decompose, static_argnums=1)
_inputs = jax.jit(fan_inputs, static_argnums=2)


def numpy_low(x_BLNF: np.ndarray, top_k: int) -> np.ndarray:
    """Reference: per series, keep the top_k rFFT bins by amplitude (ties -> lower bin), inverse transform."""
    b, l, n, f = x_BLNF.shape
    spec = np.fft.rfft(x_BLNF.astype(np.float64), axis=1)
    low = np.zeros_like(x_BLNF, dtype=np.float64)
    for i in range(b):
        for j in range(n):
            for k in range(f):
                s = spec[i, :, j, k]
                keep = np.argsort(-np.abs(s), kind="stable")[:top_k]
                kept = np.zeros_like(s)
                kept[keep] = s[keep]
                low[i, :, j, k] = np.fft.irfft(kept, n=l)
    return low


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), length=st.sampled_from([8, 9, 20]), top_k=st.integers(1, 4))
def test_fan_matches_numpy_and_reconstructs(seed, length, top_k):
    rng = np.random.default_rng(seed)
    t = np.arange(length)[None, :, None, None]
    x = (
        rng.normal(size=(2, 1, 3, 2)) * 3  # level
        + 0.2 * t * rng.normal(size=(2, 1, 3, 2))  # trend
        + np.sin(2 * np.pi * t / 5 + rng.uniform(0, 6, size=(2, 1, 3, 2)))  # cycle
        + 0.3 * rng.normal(size=(2, length, 3, 2))
    ).astype(np.float32)
    low, resid = (np.asarray(a, np.float64) for a in _decompose(x, top_k))
    np.testing.assert_allclose(low + resid, x, rtol=0, atol=1e-5)
    np.testing.assert_allclose(low, numpy_low(x, top_k), rtol=0, atol=1e-4)


def test_all_bins_kept_is_identity_and_one_bin_is_the_mean():
    x = np.random.default_rng(1).normal(size=(1, 8, 2, 3)).astype(np.float32) + 5.0  # DC dominates
    low_all, resid_all = _decompose(x, 5)
    np.testing.assert_allclose(low_all, x, atol=1e-5)
    np.testing.assert_allclose(resid_all, 0.0, atol=1e-5)
    low_one, _ = _decompose(x, 1)
    np.testing.assert_allclose(low_one, np.broadcast_to(x.mean(1, keepdims=True), x.shape), atol=1e-5)


def test_fan_inputs_ignore_masked_values_and_stay_finite():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1, 8, 4, 3)).astype(np.float32)
    mask = rng.random(x.shape) > 0.3
    other = np.where(mask, x, np.float32(np.nan))
    other[0, 0, 0, 0] = np.inf if not mask[0, 0, 0, 0] else other[0, 0, 0, 0]
    a = np.asarray(_inputs(x, mask, 2))
    b = np.asarray(_inputs(other, mask, 2))
    assert a.shape == (1, 8, 4, 3, 4)
    assert np.isfinite(b).all()
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[..., 0], np.where(mask, x, 0.0))  # the window itself, 0 where missing
    np.testing.assert_array_equal(a[..., 3], mask.astype(np.float32))
    rms = np.sqrt((a[..., 1] ** 2).mean(1))
    assert np.all((rms > 0.99) | (rms < 1e-3))  # unit RMS residual (or an all-masked, constant series)
