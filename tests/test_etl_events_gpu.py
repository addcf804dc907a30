"""CPU/GPU parity of the event groups: the same compute functions with xp = CuPy (skipped without a GPU)."""

from __future__ import annotations

import numpy as np
import pytest
from test_etl_events_core import make_calendar
from test_etl_events_flows import PRIME, weekly_rows
from test_etl_events_flows import ts_frame as flows_frame
from test_etl_events_margin_daily import dm_frame
from test_etl_events_short_selling import sp_frame
from test_etl_events_statements import frame as st_frame
from test_etl_events_statements import scenario

from etl.features import earnings, flows, interactions, margin_daily, short_selling, statements

pytestmark = pytest.mark.gpu


def _same(cpu: dict, gpu: dict) -> None:
    import cupy

    assert cpu.keys() == gpu.keys()
    for k in cpu:
        np.testing.assert_allclose(
            cupy.asnumpy(gpu[k]), cpu[k], rtol=1e-12, atol=1e-12, equal_nan=True, err_msg=k
        )


def test_gpu_matches_cpu():
    import cupy
    import pandas as pd

    cal, _ = make_calendar("2022-01-03", "2024-12-30")
    rng = np.random.default_rng(0)
    T = cal.T
    codes = np.array(["11110", "22220"])
    adv = rng.uniform(1e3, 1e4, (T, 2))
    dm = dm_frame(
        [{"Code": "11110", "App": "2024-01-09", "Pub": "2024-01-10", "Ld": 10.0, "Sd": 2.0},
         {"Code": "11110", "App": "2024-01-10", "Pub": "2024-01-11", "Ld": 11.0, "Sd": 2.0, "dL": "1"}]
    )  # fmt: skip
    _same(
        margin_daily.compute(np, cal, codes, dm, adv),
        margin_daily.compute(cupy, cal, codes, dm, cupy.asarray(adv)),
    )
    rows, _ = weekly_rows(pd.date_range("2022-01-07", "2024-10-25", freq="W-FRI"), rng)
    sec = np.full((T, 1), float(PRIME))
    ts = flows_frame(rows)
    _same(flows.compute(np, cal, ts, sec), flows.compute(cupy, cal, ts, cupy.asarray(sec)))
    af, mcap = np.ones((T, 2)), np.full((T, 2), 1e4)
    st = st_frame(scenario())
    _same(
        statements.compute(np, cal, codes, st, af, mcap),
        statements.compute(cupy, cal, codes, st, cupy.asarray(af), cupy.asarray(mcap)),
    )
    inputs = {k: rng.uniform(0.1, 0.3, (T, 2)) for k in earnings.INPUTS}
    _same(
        earnings.compute(np, cal, codes, st, inputs),
        earnings.compute(cupy, cal, codes, st, {k: cupy.asarray(v) for k, v in inputs.items()}),
    )
    sp = sp_frame([("11110", "H1", "2024-01-10", "2024-01-11", 0.006, 600.0)])
    _same(
        short_selling.compute_positions(np, cal, codes, sp),
        short_selling.compute_positions(cupy, cal, codes, sp),
    )
    x = {k: rng.normal(0, 1, (T, 2)) for k in interactions.INPUTS}
    _same(interactions.compute(np, x), interactions.compute(cupy, {k: cupy.asarray(v) for k, v in x.items()}))
