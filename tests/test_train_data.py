"""train/data.py: per-date scaling and rank labels against pandas, the universe and the stock slots against the
store read directly, windows that follow each stock, and no look-ahead (the future perturbed, byte for byte)."""

from __future__ import annotations

import shutil

import jax
import numpy as np
import pandas as pd
import polars as pl
import pytest
from train_store import INPUTS, run_config, small_store

from etl.config import ConfigError
from etl.errors import GogookuError
from train.config import DataConfig, load_config
from train.data import design_matrix, gather_batch, load_dataset, rank_normalise, resolve_inputs, robust_scale

LOOKBACK = 8


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return small_store(tmp_path_factory.getbasetemp())


def _cfg(store, **data):
    raw = run_config(store, store.parent / "runs")
    raw["data"].update(data)
    return load_config(None, [f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in _flat(raw)])


def _flat(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flat(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


@pytest.fixture(scope="module")
def ds(store):
    return load_dataset(_cfg(store))


def _pandas_robust(x: np.ndarray, universe: np.ndarray, clip: float) -> np.ndarray:
    """Per date (row) and column: median and MAD*1.4826 over the universe, mean-AD*1.2533 where MAD = 0."""
    out = np.full(x.shape, np.nan)
    for t in range(x.shape[0]):
        frame = pd.DataFrame(x[t])
        ref = frame[universe[t]]
        med = ref.median()
        dev = (ref - med).abs()
        scale = dev.median() * 1.4826
        scale = scale.where(scale > 0, dev.mean() * 1.2533)
        scaled = np.where((scale > 0).to_numpy(), ((frame - med) / scale).to_numpy(), 0.0)
        keep = frame.notna().to_numpy() & med.notna().to_numpy()[None, :]
        out[t] = np.where(keep, np.clip(scaled, -clip, clip), np.nan)
    return out


def test_robust_scale_matches_pandas_per_date():
    rng = np.random.default_rng(0)
    t, n, f = 3, 30, 5
    x = rng.standard_t(3, size=(t, n, f)) * 2.0 + 1.0
    x[:, :, 1] = (rng.random((t, n)) < 0.2).astype(float)  # a flag: MAD 0, mean-AD scales
    x[:, :, 2] = 7.0  # constant: scales to 0
    x[rng.random(x.shape) < 0.1] = np.nan
    x[1, :, 3] = np.nan  # no value that day
    universe = rng.random((t, n)) < 0.8
    got = np.asarray(robust_scale(x.astype(np.float32), universe, 5.0))
    want = _pandas_robust(x.astype(np.float32).astype(np.float64), universe, 5.0)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    # float32 arithmetic on values of size ~10: 1e-5 absolute covers its rounding
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5, equal_nan=True)
    assert np.nanmax(np.abs(got)) == 5.0 and np.all(got[:, :, 2][~np.isnan(got[:, :, 2])] == 0.0)


def test_rank_labels_are_standardised_average_ranks():
    y = np.array([[3.0, 1.0, 1.0, np.nan, 5.0, 2.0], [1.0, 1.0, 1.0, 1.0, 2.0, 9.0]])
    valid = np.array([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]], bool)
    z, mask = rank_normalise(y, valid)
    ranks = pd.DataFrame(np.where(valid, y, np.nan)).rank(axis=1, method="average")
    want = ranks.sub(ranks.mean(axis=1), axis=0).div(ranks.std(axis=1, ddof=0), axis=0)
    np.testing.assert_array_equal(mask, [[1, 1, 1, 0, 1, 0], [0, 0, 0, 0, 0, 0]])  # row 2: all tied
    np.testing.assert_allclose(z[0][mask[0]], want.to_numpy()[0][mask[0]], rtol=1e-6)
    assert np.all(z[~mask] == 0.0)


def test_panel_universe_and_slots_match_the_store(store, ds):
    frame = pl.read_parquet(sorted(store.glob("year=*/*.parquet"))).sort("Date", "Code").to_pandas()
    frame["slot"] = frame.groupby("Date").cumcount()
    frame["t"] = frame["Date"].rank(method="dense").astype(int) - 1
    assert ds.n_pad == -(-frame.groupby("Date").size().max() // 8) * 8
    assert list(ds.codes) == sorted(frame["Code"].unique())
    universe = frame["Close"].notna() & (frame["Volume"] > 0) & (frame["sector33_id"] != 33)
    np.testing.assert_array_equal(ds.stock_mask_TN[frame["t"], frame["slot"]], universe)
    assert ds.stock_mask_TN.sum() == universe.sum()  # padding is never in the universe
    np.testing.assert_array_equal(ds.codes[ds.code_TN[frame["t"], frame["slot"]]], frame["Code"])
    # inputs: the store's values scaled per date over the universe, as pandas computes it
    x = np.full((ds.dates.size, ds.n_pad, len(INPUTS)), np.nan)
    x[frame["t"], frame["slot"]] = frame[INPUTS].astype(float).to_numpy()
    uni = np.zeros(ds.stock_mask_TN.shape, bool)
    uni[frame["t"], frame["slot"]] = universe
    want = _pandas_robust(x.astype(np.float32).astype(np.float64), uni, 5.0)
    got = np.asarray(ds.arrays.x_TNF)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5, equal_nan=True)  # float32, |z| <= 5
    # raw forward returns on the universe, NaN elsewhere
    ret = np.full(ds.stock_mask_TN.shape, np.nan)
    ret[frame["t"], frame["slot"]] = np.where(universe, frame["target_1d"], np.nan)
    np.testing.assert_array_equal(ds.ret_TNH[..., 0], ret.astype(np.float32))


def test_windows_follow_each_stock_through_its_slots(ds):
    dates = np.array([LOOKBACK - 3, 150, 151, 300], np.int32)  # the first reaches before the store
    batch = jax.jit(gather_batch, static_argnums=2)(ds.arrays, dates, LOOKBACK)
    x, mask = np.asarray(batch.x_BLNF), np.asarray(batch.x_mask_BLNF)
    panel = np.asarray(ds.arrays.x_TNF)
    for b, t in enumerate(dates):
        for n in range(ds.n_pad):
            g = ds.code_TN[t, n]
            for k in range(LOOKBACK):
                s = t - LOOKBACK + 1 + k
                slot = ds.slot_TG[s, g] if (g >= 0 and s >= 0) else -1
                if slot < 0:
                    assert not mask[b, k, n].any() and not x[b, k, n].any()
                else:
                    row = panel[s, slot]
                    np.testing.assert_array_equal(mask[b, k, n], np.isfinite(row))
                    np.testing.assert_array_equal(x[b, k, n], np.nan_to_num(row, nan=0.0))
    np.testing.assert_array_equal(np.asarray(batch.stock_mask_BN), ds.stock_mask_TN[dates])
    np.testing.assert_array_equal(np.asarray(batch.y_BNH), ds.y_TNH[dates])


def _perturb_after(src, dst, cut):
    """Copy the store with every value of rows after `cut` changed (keys kept) and the later graphs too."""
    shutil.copytree(src, dst)
    rng = np.random.default_rng(1)
    for path in sorted(dst.glob("year=*/*.parquet")):
        frame = pl.read_parquet(path)
        later = frame["Date"] > cut
        cols = []
        for name, dtype in frame.schema.items():
            col = frame[name]
            if name in ("Code", "Date"):
                cols.append(col)
            elif dtype.is_float():
                noise = pl.Series(rng.normal(1.0, 0.5, frame.height) + rng.normal(0, 1, frame.height))
                cols.append(pl.when(later).then(col * noise).otherwise(col).alias(name).cast(dtype))
            elif dtype.is_integer():
                cols.append(pl.when(later).then(col.reverse()).otherwise(col).alias(name).cast(dtype))
            else:
                cols.append(pl.when(later).then(col.reverse()).otherwise(col).alias(name))
        frame.select(cols).write_parquet(path)
    edges = dict(np.load(dst / "graph_edges.npz"))
    t_cut = int(np.searchsorted(edges["dates"], str(cut), side="right"))
    start = edges["date_ptr"][t_cut]
    edges["rho"][start:] = rng.uniform(-1, 1, edges["rho"].size - start).astype(np.float32)
    edges["pairs"][start:] = edges["pairs"][start:][rng.permutation(edges["pairs"].size // 2 - start)]
    np.savez(dst / "graph_edges.npz", **edges)


def test_no_look_ahead_the_batch_at_t_ignores_every_later_row(store, ds, tmp_path):
    t = 200
    cut = ds.dates[t].item()
    _perturb_after(store, tmp_path / "perturbed", cut)
    other = load_dataset(_cfg(store), features_dir=tmp_path / "perturbed")
    assert not np.array_equal(np.asarray(other.arrays.x_TNF[t + 1 :]), np.asarray(ds.arrays.x_TNF[t + 1 :]))
    gather = jax.jit(gather_batch, static_argnums=2)
    for dates in (
        np.array([t, t - 1, t - 5, t - 40], np.int32),
        np.array([LOOKBACK, 60, 100, 150], np.int32),
    ):
        a, b = gather(ds.arrays, dates, LOOKBACK), gather(other.arrays, dates, LOOKBACK)
        for name in a.__dataclass_fields__:
            left, right = np.asarray(getattr(a, name)), np.asarray(getattr(b, name))
            assert left.tobytes() == right.tobytes(), name


def test_design_matrix_gives_the_store_values_and_the_model_scaling(store, ds):
    idx = np.array([10, 11, 200])
    raw, t, slot = design_matrix(ds, idx)
    scaled, t2, slot2 = design_matrix(ds, idx, scaled=True)
    np.testing.assert_array_equal(t, t2)
    np.testing.assert_array_equal(slot, slot2)
    assert raw.shape == (ds.stock_mask_TN[idx].sum(), len(INPUTS)) and raw.dtype == np.float32
    frame = pl.read_parquet(sorted(store.glob("year=*/*.parquet"))).to_pandas().set_index(["Date", "Code"])
    keys = list(zip(pd.to_datetime(ds.dates[t]), ds.codes[ds.code_TN[t, slot]], strict=True))
    np.testing.assert_array_equal(raw, frame.loc[keys, INPUTS].astype(np.float32).to_numpy())
    panel = np.asarray(ds.arrays.x_TNF)[t, slot]
    np.testing.assert_allclose(scaled, panel, rtol=0, atol=1e-6, equal_nan=True)


def test_inputs_must_be_role_i_columns(store):
    catalog = {"columns": [{"name": "Close", "role": "A"}, {"name": "returns_1d", "role": "I"}]}
    assert resolve_inputs(catalog, DataConfig()) == ("returns_1d",)
    with pytest.raises(GogookuError, match="'Close' has role A; only role-I columns are model inputs"):
        resolve_inputs(catalog, DataConfig(inputs=("Close",)))
    with pytest.raises(GogookuError, match="'nope' is not a column"):
        resolve_inputs(catalog, DataConfig(inputs=("nope",)))
    with pytest.raises(ConfigError, match="data.inputs = 'some'"):
        load_config(None, ["data.inputs=some"])
