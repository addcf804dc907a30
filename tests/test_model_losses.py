"""Quantile heads never cross; losses match hand-worked numbers and NumPy/SciPy; masked dates weigh 0."""

import dataclasses

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import spearmanr

from etl.config import ConfigError
from model.config import LossConfig, ModelConfig, load_model_config
from model.heads import monotone_quantiles
from model.losses import masked_pearson, pinball_loss, ranks, soft_ranks, total_loss

_monotone = jax.jit(monotone_quantiles, static_argnums=1)


@settings(max_examples=60, deadline=None)
@given(
    raw=arrays(np.float32, (3, 5), elements=st.floats(-60, 60, width=32)),
    median_index=st.integers(0, 4),
)
def test_quantiles_never_cross(raw, median_index):
    q = np.asarray(_monotone(raw, median_index))
    assert np.all(np.diff(q, axis=-1) >= 0)
    np.testing.assert_array_equal(q[:, median_index], raw[:, median_index])


def test_monotone_quantiles_hand_worked():
    raw = np.array([0.0, 1.0, 2.0], np.float32)  # softplus(0) = ln 2, softplus(2) = ln(1 + e^2)
    q = np.asarray(monotone_quantiles(raw, 1))
    np.testing.assert_allclose(q, [1.0 - np.log(2.0), 1.0, 1.0 + np.log1p(np.exp(2.0))], rtol=1e-6)


def test_pinball_hand_worked():
    q = np.array([[[[-1.0, 0.0, 1.0]]]], np.float32)  # B=N=H=1, Q=3
    y = np.array([[[0.5]]], np.float32)
    valid = np.ones((1, 1, 1), bool)
    # errors y - q = 1.5, 0.5, -0.5 at tau 0.1, 0.5, 0.9 -> 0.15, 0.25, 0.05; mean over Q = 0.15
    got = pinball_loss(q, y, valid, (0.1, 0.5, 0.9))
    np.testing.assert_allclose(np.asarray(got), [0.15], rtol=1e-6)


def test_masked_pearson_and_ranks_match_numpy_scipy():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 20, 2)).astype(np.float32)
    b = (0.5 * a + rng.normal(size=a.shape)).astype(np.float32)
    valid = rng.random(a.shape) > 0.3
    valid[2, :, 1] = False
    valid[2, 4, 1] = True  # one stock: undefined
    corr, defined = (np.asarray(v) for v in masked_pearson(a, b, valid))
    r = np.asarray(ranks(b, valid))
    for i in range(3):
        for h in range(2):
            m = valid[i, :, h]
            if m.sum() < 2:
                assert not defined[i, h] and corr[i, h] == 0.0
                continue
            assert defined[i, h]
            np.testing.assert_allclose(corr[i, h], np.corrcoef(a[i, m, h], b[i, m, h])[0, 1], atol=1e-5)
            np.testing.assert_array_equal(r[i, m, h], np.argsort(np.argsort(b[i, m, h])))


def test_soft_spearman_approaches_scipy():
    rng = np.random.default_rng(1)
    p = rng.normal(size=(1, 30, 1)).astype(np.float32)
    y = (p + rng.normal(size=p.shape)).astype(np.float32)
    valid = np.ones(p.shape, bool)
    valid[0, :5] = False
    soft = soft_ranks(p, valid, 1e-4)
    rho, _ = masked_pearson(soft, ranks(y, valid), valid)
    want = spearmanr(p[0, 5:, 0], y[0, 5:, 0]).statistic
    np.testing.assert_allclose(float(rho[0, 0]), want, atol=1e-4)


def _cfg(**loss):
    return dataclasses.replace(
        load_model_config("tiny"), loss=LossConfig(**{"ic_weight": 0.5, "spearman_weight": 0.3, **loss})
    )


def test_all_masked_date_has_zero_weight_and_finite_gradients():
    cfg = _cfg()
    rng = np.random.default_rng(2)
    q = np.sort(rng.normal(size=(2, 10, 5, 5)).astype(np.float32), axis=-1)
    y = rng.normal(size=(2, 10, 5)).astype(np.float32)
    y_mask = rng.random(y.shape) > 0.2
    stock_mask = np.ones((2, 10), bool)
    stock_mask[1] = False
    y[1] = np.nan  # a fully masked date may hold anything
    q[1] = np.inf
    loss = jax.jit(lambda q_, y_, ym, sm: total_loss(q_, y_, ym, sm, cfg)[0])
    full = loss(q, y, y_mask, stock_mask)
    first = loss(q[:1], y[:1], y_mask[:1], stock_mask[:1])
    np.testing.assert_allclose(float(full), float(first), rtol=1e-6)
    q_finite = np.where(np.isfinite(q), q, 0.0)
    grad_fn = jax.jit(jax.grad(loss))
    grad = grad_fn(q_finite, y, y_mask, stock_mask)
    assert np.isfinite(np.asarray(grad)).all() and not np.asarray(grad)[1].any()
    nothing = loss(q_finite, y, np.zeros_like(y_mask), stock_mask)
    assert float(nothing) == 0.0
    assert np.isfinite(np.asarray(grad_fn(q_finite, y, np.zeros_like(y_mask), stock_mask))).all()


def test_horizon_weights_select_horizons():
    rng = np.random.default_rng(3)
    q = np.sort(rng.normal(size=(2, 10, 5, 5)).astype(np.float32), axis=-1)
    y = rng.normal(size=(2, 10, 5)).astype(np.float32)
    ones = np.ones((2, 10, 5), bool)
    sm = np.ones((2, 10), bool)
    only_h2 = _cfg(horizon_weights=(0.0, 0.0, 1.0, 0.0, 0.0), spearman_weight=0.0)
    _, parts = jax.jit(total_loss, static_argnums=4)(q, y, ones, sm, only_h2)
    corr = [np.corrcoef(q[b, :, 2, 2], y[b, :, 2])[0, 1] for b in range(2)]
    np.testing.assert_allclose(float(parts["ic"]), np.mean(corr), atol=1e-5)
    np.testing.assert_allclose(float(parts["ic_H"][2]), np.mean(corr), atol=1e-5)
    tau = np.array([0.1, 0.25, 0.5, 0.75, 0.9])
    e = y[:, :, 2, None] - q[:, :, 2]
    np.testing.assert_allclose(float(parts["pinball"]), np.maximum(tau * e, (tau - 1) * e).mean(), rtol=1e-5)


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="quantiles"):
        load_model_config("tiny", ["quantiles=[0.1, 0.9]"])
    with pytest.raises(ConfigError, match="divisible"):
        load_model_config("tiny", ["hidden=15"])
    with pytest.raises(ConfigError, match="horizon_weights"):
        load_model_config("tiny", ["loss.horizon_weights=[1.0]"])
    with pytest.raises(ConfigError, match="not found"):
        load_model_config("no-such-model")
    assert isinstance(load_model_config("base"), ModelConfig)
