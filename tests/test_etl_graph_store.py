"""`gogooku synth` -> `gogooku etl` end to end: all 395 columns, graph columns filled, the edge file readable.

The edge file is checked against the store itself: on a date, the edges at each stock's position (its rank
among that day's rows sorted by Code) give exactly the stored graph_degree, which lies between
min(peer_count, k) and peer_count, and edge endpoints are nodes (is_graph_valid = 1). The config overrides
(`graph.k=5 graph.window=40`) must reach the build (catalog and degrees).
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from etl.features.registry import CANONICAL
from etl.graph.build import read_graph_edges
from etl.store import feature_store as store
from train.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("graph_store")
    raw, feat = tmp / "raw", tmp / "feat"
    args = ["synth", "--stocks", "40", "--start", "2021-01-01", "--end", "2022-06-30", "--out", str(raw)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app, ["etl", "--raw", str(raw), "--out", str(feat), "--device", "cpu", "graph.k=5", "graph.window=40"]
    )
    assert res.exit_code == 0, res.output
    return feat, res.output


def test_store_holds_all_395_columns_with_graphs(built):
    feat, output = built
    df = store.scan(feat).collect()
    assert df.columns == [row[1] for row in CANONICAL]
    assert "graph_edges.npz" in output and "395 columns" in output
    valid = df["is_graph_valid"] == 1
    assert valid.sum() > df.height // 2
    for name in ("peer_count", "graph_degree", "graph_pagerank", "graph_closeness", "graph_core"):
        assert df[name].null_count() < df.height, name
        assert df.filter(~valid)[name].null_count() == (~valid).sum(), name  # NaN off V_t
    assert df.filter(valid)["graph_degree"].null_count() == 0
    cat = json.loads((feat / "catalog.json").read_text())
    assert cat["graph"]["k"] == 5 and cat["graph"]["window"] == 40 and cat["graph"]["min_obs"] == 40
    assert cat["n_columns"] == 395


def test_edge_file_matches_the_stored_degrees(built):
    feat, _ = built
    df = store.scan(feat).collect().sort("Date", "Code")
    cat = json.loads((feat / "catalog.json").read_text())
    edges, dates = read_graph_edges(feat)
    store_dates = [str(d) for d in df["Date"].unique().sort().to_list()]
    assert dates == store_dates and edges.epad == cat["graph"]["epad"]
    assert int(edges.mask_TE.sum()) == 2 * cat["graph"]["edges"]
    t = len(dates) - 1
    day = df.filter(pl.col("Date") == pl.lit(dates[t]).str.to_date())
    src = edges.edges_TE2[t][edges.mask_TE[t], 0]
    deg = np.bincount(src, minlength=day.height)
    stored = day["graph_degree"].fill_null(0).to_numpy()
    assert deg.sum() > 0 and np.array_equal(deg, stored)
    assert (day["is_graph_valid"].to_numpy()[np.unique(src)] == 1).all()
    # neighbours are peers (|rho| >= threshold both ways) and every node keeps its top min(peers, k)
    peers = day["peer_count"].fill_null(0).to_numpy()
    assert (deg <= peers).all() and (deg >= np.minimum(peers, 5)).all() and (peers > 5).any()
    rho = edges.feat_TEF[t][edges.mask_TE[t], 0]
    assert (np.abs(rho) >= 0.3 - 1e-6).all()
