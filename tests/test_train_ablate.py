"""`gogooku ablate` on a tiny store: every (variant, seed) becomes an evaluated run folder under
RUN/ablation/, a rerun skips them, the same seed reproduces the same test metrics on the CPU while another
seed does not, the table is the report's aggregation, and the report renders the ablations from them.

Two variants (full, shuffled_graph) x two seeds of the tiny model, one fold of three steps each.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from train_store import run_config, small_store, write_config
from typer.testing import CliRunner

from etl.errors import GogookuError
from train.ablate import parse_variants, run_ablation, variant_config
from train.cli import app
from train.report import PARTS, fmt_pm, render_report

VARIANTS = ["full", "shuffled_graph"]


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    """(the first ablation's result, the config path, RUN_DIR)."""
    features = small_store(tmp_path_factory.getbasetemp())
    root = tmp_path_factory.mktemp("ablate")
    raw = run_config(features, root / "runs", max_steps=3, max_epochs=1)
    path = write_config(root / "tiny.yaml", raw)
    result = run_ablation(path, [], seeds=2, variants=VARIANTS)
    return result, path, root / "runs" / "run"


def _metrics(folder: Path) -> dict:
    return json.loads((folder / "eval" / "test" / "atft" / "metrics.json").read_text())


def test_each_variant_and_seed_is_an_evaluated_run_folder(ablation):
    result, path, run_dir = ablation
    assert result.run_dir == run_dir and result.skipped == []
    assert result.trained == [("full", 0), ("shuffled_graph", 0), ("full", 1), ("shuffled_graph", 1)]
    for variant, seed in result.trained:
        folder = run_dir / "ablation" / variant / f"seed_{seed}"
        cfg = json.loads((folder / "inputs.json").read_text())
        assert ("shuffled" in cfg["graph"]) == (variant == "shuffled_graph")
        metrics = _metrics(folder)
        assert metrics["split"] == "test" and metrics["seed"] == seed
        assert (folder / "config.yaml").is_file() and (folder / "fold_0" / "summary.json").is_file()


def test_variant_configs_change_only_their_part(ablation):
    _, path, run_dir = ablation
    full = variant_config(path, [], "full", 2)
    assert (
        full.train.seed == 2 and Path(full.paths.runs) / full.train.name == run_dir / "ablation/full/seed_2"
    )
    assert variant_config(path, [], "no_gat", 0).model.gat_layers == 0 and full.model.gat_layers > 0
    assert variant_config(path, [], "no_fan", 0).model.fan is False and full.model.fan is True
    shuffled = variant_config(path, ["train.lr=0.01"], "shuffled_graph", 1)
    assert (
        shuffled.data.graph == "shuffled" and full.data.graph == "correlation" and shuffled.train.lr == 0.01
    )
    with pytest.raises(GogookuError, match="no_gta"):
        parse_variants("full,no_gta")


def test_the_table_is_mean_and_std_over_seeds_and_the_paired_difference(ablation):
    result, _, run_dir = ablation
    ic = {
        (v, s): _metrics(run_dir / "ablation" / v / f"seed_{s}")["overall"]["horizons"]["1d"]["signal"][
            "rank_ic_mean"
        ]
        for v in VARIANTS
        for s in (0, 1)
    }
    rows = {r.variant: r for r in result.stats}
    assert list(rows) == VARIANTS
    for v in VARIANTS:  # float64 mean and ddof-1 std of two values: NumPy's, to rounding
        assert rows[v].mean == pytest.approx(np.mean([ic[v, 0], ic[v, 1]]), rel=1e-12, abs=1e-15)
        assert rows[v].std == pytest.approx(np.std([ic[v, 0], ic[v, 1]], ddof=1), rel=1e-9, abs=1e-15)
    diffs = [ic["full", s] - ic["shuffled_graph", s] for s in (0, 1)]
    assert rows["shuffled_graph"].adds_mean == pytest.approx(np.mean(diffs), rel=1e-12, abs=1e-15)
    assert rows["shuffled_graph"].paired_seeds == [0, 1] and math.isnan(rows["full"].adds_mean)


def test_a_rerun_skips_what_is_evaluated(ablation):
    result, path, _ = ablation
    out = CliRunner().invoke(
        app, ["ablate", "--config", str(path), "--seeds", "2", "--variants", ",".join(VARIANTS)]
    )
    assert out.exit_code == 0, out.output
    assert out.output.count("skipped") == 4 and "started" not in out.output
    text = " ".join(out.output.split())
    for row in result.stats:  # the printed table holds the aggregation's numbers, none cut short
        assert fmt_pm(row.mean, row.std, 4) in text
        if row.variant != "full":
            assert fmt_pm(row.adds_mean, row.adds_std, 4) in text and PARTS[row.variant] in text


def test_the_same_seed_reproduces_the_test_metrics_and_another_seed_does_not(ablation, tmp_path):
    _, path, run_dir = ablation
    again = run_ablation(path, [f"paths.runs={tmp_path}"], seeds=1, variants=["full"])
    first = _metrics(run_dir / "ablation" / "full" / "seed_0")
    second = _metrics(again.run_dir / "ablation" / "full" / "seed_0")
    assert second["overall"] == first["overall"]  # the same seed on the CPU: the same numbers, exactly
    other = _metrics(run_dir / "ablation" / "full" / "seed_1")
    assert other["overall"] != first["overall"]


def test_the_report_renders_the_ablations(ablation, tmp_path):
    _, _, run_dir = ablation
    main = tmp_path / "main"  # the main run: a copy of the full model's seed 0, with the ablation beside it
    shutil.copytree(run_dir / "ablation" / "full" / "seed_0", main)
    shutil.copytree(run_dir / "ablation", main / "ablation")
    page = render_report(main).read_text()
    section = page[page.index("Ablations: what each part adds") :]
    assert "graph shuffled across stocks" in section and "the graph&#x27;s true structure" in section
    assert "no ablation in this run" not in section and "without an evaluation" not in section
