"""The assembled ATFT-GAT-FAN: every parameter trains, padding is invisible, stock order is irrelevant, and
one compilation serves every date."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from model.atft_gat_fan import ATFTGATFAN, init_params, param_count, param_shapes, summary_rows
from model.batch import Batch, random_batch
from model.config import load_model_config
from model.losses import total_loss
from model.tft import GRN

CFG = load_model_config("tiny")
NPAD = 16
TRACES = []


def _apply_with_weights(params, batch):
    TRACES.append(1)  # Python side effect: runs once per trace (compilation), never per call
    return ATFTGATFAN(CFG).apply(params, batch, mutable=["intermediates"])


APPLY_WITH_WEIGHTS = jax.jit(_apply_with_weights)
APPLY = lambda params, batch: APPLY_WITH_WEIGHTS(params, batch)[0]


def _loss(params, batch):
    # Deterministic: dropout's RNG code doubles XLA's CPU compile time; its wiring is tested on a GRN below
    # and the full training mode runs in bench/model.py.
    q = ATFTGATFAN(CFG).apply(params, batch)
    return total_loss(q, batch.y_BNH, batch.y_mask_BNH, batch.stock_mask_BN, CFG)[0]


LOSS_AND_GRAD = jax.jit(jax.value_and_grad(_loss))


@pytest.fixture(scope="module")
def batch():
    return random_batch(CFG, n_stocks=(12, 9), n_pad=NPAD, seed=0)


def _with_highway(params, kernel, bias):
    p = params["params"]
    return {"params": p | {"heads": p["heads"] | {"highway": {"kernel": kernel, "bias": bias}}}}


def _with_graph_highway(params, kernel):
    p = params["params"]
    return {"params": p | {"gat": p["gat"] | {"highway": {"kernel": kernel}}}}


@pytest.fixture(scope="module")
def params(batch):
    """Initial parameters, except the highways: they start at zero, so give them weights for their paths to
    show."""
    p = init_params(CFG, seed=0, batch=batch)
    shape = p["params"]["heads"]["highway"]["kernel"].shape
    p = _with_highway(p, jax.random.normal(jax.random.key(1), shape) * 0.1, jnp.full(shape[1], 0.1))
    shape = p["params"]["gat"]["highway"]["kernel"].shape
    return _with_graph_highway(p, jax.random.normal(jax.random.key(2), shape) * 0.1)


def _leaves(tree):
    return [
        (jax.tree_util.keystr(path), np.asarray(leaf))
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    ]


def test_every_parameter_gets_a_gradient_and_moves(params, batch):
    loss, grads = LOSS_AND_GRAD(params, batch)
    assert np.isfinite(float(loss))
    names = [name for name, _ in _leaves(grads)]
    assert any("gat" in n for n in names) and any("lstm" in n for n in names)
    zero = [name for name, g in _leaves(grads) if not np.any(g != 0)]
    assert not zero, f"parameters with an all-zero gradient: {zero}"
    opt = optax.adamw(1e-3)
    updates, _ = opt.update(grads, opt.init(params), params)
    moved = optax.apply_updates(params, updates)
    still = [
        a for (a, x), (_, y) in zip(_leaves(params), _leaves(moved), strict=True) if np.array_equal(x, y)
    ]
    assert not still, f"parameters unchanged by one AdamW step: {still}"


def test_outputs_shape_finite_non_crossing_and_zero_on_padding(params, batch):
    assert set(params) == {"params"}
    q = np.asarray(APPLY(params, batch))
    assert q.shape == (2, NPAD, len(CFG.horizons), len(CFG.quantiles))
    assert np.isfinite(q).all()
    assert np.all(np.diff(q, axis=-1) >= 0)
    assert not q[~batch.stock_mask_BN].any()
    (w_BNF,) = APPLY_WITH_WEIGHTS(params, batch)[1]["intermediates"]["variable_weights_BNF"]
    assert w_BNF.shape == (2, NPAD, CFG.n_features)
    np.testing.assert_allclose(np.asarray(w_BNF).sum(-1), 1.0, rtol=1e-5)


def test_padding_and_masked_values_do_not_change_real_outputs(params, batch):
    rng = np.random.default_rng(7)
    real = batch.stock_mask_BN
    x = batch.x_BLNF.copy()
    hidden = ~batch.x_mask_BLNF  # masked values of real stocks and everything of padded stocks
    x[hidden] = rng.normal(size=hidden.sum()) * 100
    x[0, 0, 0][hidden[0, 0, 0]] = np.nan
    sector = np.where(real, batch.sector_BN, rng.integers(0, 30, size=real.shape)).astype(np.int32)
    edges = batch.edges_BE2.copy()
    em = batch.edge_mask_BE.copy()
    edges[~em] = rng.integers(0, NPAD, size=((~em).sum(), 2))
    feat = np.where(em[..., None], batch.edge_feat_BEC, np.float32(np.nan))
    pad_slot = np.flatnonzero(~em[1])[0]  # a "real" edge from a padded stock: ignored by construction
    edges[1, pad_slot], em[1, pad_slot], feat[1, pad_slot] = [NPAD - 1, 0], True, 1.0
    other = dataclasses.replace(
        batch,
        x_BLNF=x,
        x_mask_BLNF=batch.x_mask_BLNF | ~real[:, None, :, None],  # padded stocks' masks claim "valid"
        sector_BN=sector,
        edges_BE2=edges,
        edge_mask_BE=em,
        edge_feat_BEC=feat,
    )
    a, b = np.asarray(APPLY(params, batch)), np.asarray(APPLY(params, other))
    np.testing.assert_allclose(a[real], b[real], rtol=1e-6, atol=1e-6)
    # and the test can see a change: moving one real value does move real outputs
    moved = batch.x_BLNF.copy()
    moved[0, -1, 0] += 1.0
    c = np.asarray(APPLY(params, dataclasses.replace(batch, x_BLNF=moved)))
    assert np.abs(c[0, 0] - a[0, 0]).max() > 1e-4


def test_permuting_stocks_permutes_outputs(params, batch):
    rng = np.random.default_rng(3)
    perm = np.stack([rng.permutation(NPAD) for _ in range(2)])  # new slot k holds old stock perm[k]
    inv = np.argsort(perm, axis=1)
    take = lambda a: np.take_along_axis(a, perm.reshape(perm.shape + (1,) * (a.ndim - 2)), axis=1)
    eorder = rng.permutation(batch.edges_BE2.shape[1])
    edges = np.stack([inv[b][batch.edges_BE2[b]] for b in range(2)])[:, eorder].astype(np.int32)
    permuted = Batch(
        x_BLNF=np.stack([batch.x_BLNF[b][:, perm[b]] for b in range(2)]),
        x_mask_BLNF=np.stack([batch.x_mask_BLNF[b][:, perm[b]] for b in range(2)]),
        sector_BN=take(batch.sector_BN),
        market_BN=take(batch.market_BN),
        edges_BE2=edges,
        edge_mask_BE=batch.edge_mask_BE[:, eorder],
        edge_feat_BEC=batch.edge_feat_BEC[:, eorder],
        stock_mask_BN=take(batch.stock_mask_BN),
        y_BNH=take(batch.y_BNH),
        y_mask_BNH=take(batch.y_mask_BNH),
    )
    a = np.asarray(APPLY(params, batch))
    b = np.asarray(APPLY(params, permuted))
    want = np.stack([a[i][perm[i]] for i in range(2)])
    np.testing.assert_allclose(b, want, rtol=1e-5, atol=1e-5)


def test_edgeless_stock_and_empty_date_are_finite(params, batch):
    em = batch.edge_mask_BE.copy()
    em[0] &= (batch.edges_BE2[0, :, 0] != 0) & (batch.edges_BE2[0, :, 1] != 0)  # stock 0 loses its edges
    sm = batch.stock_mask_BN.copy()
    sm[1] = False  # date 1 has no stocks at all
    lonely = dataclasses.replace(batch, edge_mask_BE=em, stock_mask_BN=sm)
    q = np.asarray(APPLY(params, lonely))
    assert np.isfinite(q).all() and np.abs(q[0, 0]).max() > 0 and not q[1].any()
    loss, grads = LOSS_AND_GRAD(params, lonely)
    assert np.isfinite(float(loss))
    assert all(np.isfinite(g).all() for _, g in _leaves(grads))


def test_one_compilation_serves_different_real_n(params, batch):
    APPLY(params, batch)
    before = len(TRACES)
    for i, counts in enumerate([(12, 9), (16, 3), (5, 14), (0, 1)]):
        q = APPLY(params, random_batch(CFG, n_stocks=counts, n_pad=NPAD, seed=i))
        assert q.shape[1] == NPAD
    assert len(TRACES) == before == 1  # every test in this file shares one compiled forward
    assert APPLY_WITH_WEIGHTS._cache_size() == 1


def test_dropout_is_active_only_in_training_mode():
    grn = GRN(8, dropout=0.5)
    x = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
    p = grn.init(jax.random.key(0), x)
    train = lambda k: np.asarray(grn.apply(p, x, deterministic=False, rngs={"dropout": jax.random.key(k)}))
    np.testing.assert_array_equal(grn.apply(p, x), grn.apply(p, x, deterministic=True))
    assert not np.allclose(train(1), train(2)) and not np.allclose(train(1), grn.apply(p, x))


def test_param_counts_and_summary(params):
    tiny = param_count(params)
    base_cfg = load_model_config("base")
    base = param_count(param_shapes(base_cfg))
    assert 5_000 < tiny < 50_000
    assert 4_500_000 < base < 6_000_000
    rows = summary_rows(base_cfg)
    assert sum(count for _, count, _ in rows) == base
    assert {name for name, _, _ in rows} == {"static", "vsn", "temporal", "gat", "fusion", "heads"}


def test_bfloat16_compute_keeps_float32_params(params, batch):
    cfg = dataclasses.replace(CFG, compute_dtype="bfloat16")
    shapes = param_shapes(cfg)
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(shapes)} == {jnp.dtype(jnp.float32)}
    q = np.asarray(jax.jit(ATFTGATFAN(cfg).apply)(params, batch))  # the float32 params serve both
    assert q.dtype == np.float32 and np.isfinite(q).all() and np.all(np.diff(q, axis=-1) >= 0)


def test_info_model_prints_parameter_count_and_bad_name_is_one_line():
    from typer.testing import CliRunner

    from train.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["info", "--model", "tiny"], terminal_width=140)
    assert result.exit_code == 0, result.output
    assert f"{param_count(param_shapes(CFG)):,}" in result.output and "gat" in result.output
    bad = runner.invoke(app, ["info", "--model", "no-such-model"])
    assert bad.exit_code == 2 and "not found" in bad.output and "Traceback" not in bad.output


@pytest.mark.gpu
def test_gpu_matches_cpu_and_trains(params, batch):
    cpu, gpu = jax.devices("cpu")[0], jax.devices("gpu")[0]
    apply = jax.jit(lambda p, b: ATFTGATFAN(CFG).apply(p, b))
    with jax.default_matmul_precision("highest"):
        a = np.asarray(apply(jax.device_put(params, cpu), jax.device_put(batch, cpu)))
        b = np.asarray(apply(jax.device_put(params, gpu), jax.device_put(batch, gpu)))
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    loss, grads = LOSS_AND_GRAD(jax.device_put(params, gpu), jax.device_put(batch, gpu))
    assert np.isfinite(float(loss)) and all(np.any(g != 0) for _, g in _leaves(grads))


def test_ablation_switches_keep_the_parameter_tree_and_change_the_output(params, batch):
    """`fan=False` feeds the scaled window itself through the same parameters (outputs differ);
    `gat_layers=0` drops the graph, so a no-GAT model ignores its edges."""
    no_fan = dataclasses.replace(CFG, fan=False)
    q_full = np.asarray(APPLY(params, batch))
    q_no_fan = np.asarray(ATFTGATFAN(no_fan).apply(params, batch))
    assert np.isfinite(q_no_fan).all() and not np.allclose(q_full, q_no_fan)

    no_gat = dataclasses.replace(CFG, gat_layers=0)
    p = init_params(no_gat, seed=0, batch=batch)
    shuffled = batch.replace(edges_BE2=np.asarray(batch.edges_BE2)[:, ::-1][:, :, ::-1])
    q_a = np.asarray(ATFTGATFAN(no_gat).apply(p, batch))
    q_b = np.asarray(ATFTGATFAN(no_gat).apply(p, shuffled))
    np.testing.assert_array_equal(q_a, q_b)


def test_the_highway_adds_a_linear_map_of_the_latest_valid_inputs(params, batch):
    """q(highway W, b) - q(highway 0) = x_t W + b on every quantile of real stocks, where x_t is the window's
    last date with missing values as 0; padded stocks stay 0; `highway=False` drops exactly those weights."""
    hw = params["params"]["heads"]["highway"]
    zeroed = _with_highway(params, jnp.zeros_like(hw["kernel"]), jnp.zeros_like(hw["bias"]))
    real = batch.stock_mask_BN
    with jax.default_matmul_precision("highest"):
        diff = np.asarray(APPLY(params, batch)) - np.asarray(APPLY(zeroed, batch))
    latest = np.where(batch.x_mask_BLNF[:, -1], batch.x_BLNF[:, -1], 0.0).astype(np.float64)
    expected = latest @ np.asarray(hw["kernel"], np.float64) + np.asarray(hw["bias"], np.float64)
    # float32 sums of F = 8 products of unit-scale numbers, on each side of the difference
    np.testing.assert_allclose(diff[real], np.broadcast_to(expected[..., None], diff.shape)[real], atol=1e-5)
    assert np.all(diff[~real] == 0)

    off = dataclasses.replace(CFG, highway=False)
    shapes = param_shapes(off)["params"]
    assert "highway" not in shapes["heads"] and "highway" not in shapes["gat"]
    heads = CFG.n_features * len(CFG.horizons) + len(CFG.horizons)
    graph = CFG.n_features * CFG.gat_heads * len(CFG.horizons)  # no bias
    assert param_count(params) - param_count(shapes) == heads + graph


def test_the_graph_highway_is_linear_in_its_weights_and_reads_only_neighbours(params, batch):
    """q(W) - q(0) is linear in the graph highway's weights W, the same on every quantile, 0 for padded
    stocks and for stocks without a real edge; it changes when the graph does; `gat_layers=0` has none."""
    kernel = params["params"]["gat"]["highway"]["kernel"]
    q = lambda k, b=batch: np.asarray(APPLY(_with_graph_highway(params, k), b), np.float64)
    base = q(jnp.zeros_like(kernel))
    one, two = q(kernel) - base, q(2 * kernel) - base
    assert np.abs(one).max() > 1e-3
    # float32 outputs of order 1 on each side of each difference: absolute error ~1e-6
    np.testing.assert_allclose(two, 2 * one, atol=1e-5)
    np.testing.assert_allclose(one, np.broadcast_to(one[..., :1], one.shape), atol=1e-6)
    edges, emask = np.asarray(batch.edges_BE2), np.asarray(batch.edge_mask_BE)
    real = batch.stock_mask_BN
    for b in range(real.shape[0]):
        e = edges[b][emask[b]]
        e = e[real[b][e[:, 0]] & real[b][e[:, 1]] & (e[:, 0] != e[:, 1])]
        alone = np.setdiff1d(np.arange(real.shape[1]), e[:, 1])
        assert np.all(one[b, alone] == 0)
        assert np.any(one[b, np.unique(e[:, 1])] != 0)
    rewired = batch.replace(edges_BE2=np.asarray(batch.edges_BE2)[:, ::-1][:, :, ::-1])
    assert not np.allclose(q(kernel, rewired) - q(jnp.zeros_like(kernel), rewired), one)
    assert "highway" not in param_shapes(dataclasses.replace(CFG, gat_layers=0))["params"].get("gat", {})
