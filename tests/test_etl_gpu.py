"""CPU/GPU parity: the same pipeline with xp = CuPy gives the NumPy build's values (skipped without a GPU)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from test_etl_helpers import make_raw

from etl import ops, pipeline


@pytest.mark.gpu
def test_ops_parity_on_gpu():
    import cupy

    rng = np.random.default_rng(0)
    x = 100 + rng.normal(size=(300, 7)).cumsum(axis=0)
    x[rng.random(x.shape) < 0.05] = np.nan
    g = rng.integers(-1, 3, size=x.shape)
    xg, gg = cupy.asarray(x), cupy.asarray(g)
    pairs = [
        (ops.rolling_std(x, 20, 10), ops.rolling_std(xg, 20, 10)),
        (ops.rolling_z(x, 60, 60), ops.rolling_z(xg, 60, 60)),
        (ops.rolling_max(x, 252, 1), ops.rolling_max(xg, 252, 1)),
        (ops.ema(x, 12), ops.ema(xg, 12)),
        (ops.ffill(x), ops.ffill(xg)),
        (ops.group_median(x, g, 3), ops.group_median(xg, gg, 3)),
        (ops.group_rankpct(x, g, 3), ops.group_rankpct(xg, gg, 3)),
        (ops.group_z(x, g, 3), ops.group_z(xg, gg, 3)),
    ]
    for cpu, gpu in pairs:
        np.testing.assert_allclose(cupy.asnumpy(gpu), cpu, rtol=1e-9, atol=1e-12)


@pytest.mark.gpu
def test_pipeline_parity_on_gpu():
    import cupy

    raw = make_raw()
    cpu = pipeline.build_frame(raw, chunk_size=4)
    gpu = pipeline.build_frame(raw, chunk_size=4, xp=cupy)
    assert cpu.columns == gpu.columns and cpu.select("Code", "Date").equals(gpu.select("Code", "Date"))
    bad = []
    for c in cpu.columns[2:]:
        a, b = cpu[c], gpu[c]
        if a.dtype in (pl.String, pl.Date):
            ok = a.equals(b)
        else:
            ok = np.allclose(
                a.cast(pl.Float64).to_numpy(),
                b.cast(pl.Float64).to_numpy(),
                rtol=1e-6,
                atol=1e-9,
                equal_nan=True,
            )
        if not ok:
            bad.append(c)
    assert not bad, f"CPU and GPU builds differ in {bad}"
