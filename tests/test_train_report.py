"""`gogooku report`: one self-contained HTML page from a run folder.

The run folder is a tiny fake that follows the run-folder contract file by file (`write_run`, the one fixture
builder). Its metrics.json entries mirror `train.metrics.summarise`'s structure with numbers chosen so that
the headline can be worked out by hand; after the scorer is merged, `summary` can be swapped for the real
`summarise(score(...))` without touching the tests' structure.
"""

from __future__ import annotations

import base64
import json
import statistics
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from etl.errors import GogookuError
from train.cli import app
from train.report import headline, headline_rows, render_report

HORIZONS = (1, 5)
MODELS = ("atft", "lightgbm", "oracle", "reversal_5d")
BASE_IC = {"atft": 0.02, "lightgbm": 0.01, "oracle": 0.09, "reversal_5d": 0.03}
ABLATION_SHIFT = {"full": 0.0, "no_gat": -0.01, "no_fan": -0.005, "shuffled_graph": -0.008}
MODULES = ("static", "vsn", "temporal", "gat", "fusion", "heads")
N_FOLDS = 2
SECTION_IDS = [
    "headline",
    "daily_rank_ic",
    "cumulative_returns",
    "deciles",
    "learning_curves",
    "grad_norms",
    "vsn_weights",
    "lgbm_importance",
    "ablations",
    "folds",
    "metadata",
]
PNG = b"\x89PNG\r\n\x1a\n"


def fold_ic(model: str, h: int, fold: int, seed: int, shift: float = 0.0) -> float:
    return BASE_IC[model] + shift + 0.01 * fold + 0.001 * h + 0.004 * seed


def summary(rank_ic: dict[int, float]) -> dict:
    """A dict shaped like train.metrics.summarise's, its other aggregates fixed multiples of the RankIC."""
    perf = ("ann_return", "ann_vol", "sharpe", "sortino", "max_drawdown", "calmar", "gross_ann_return")
    horizons = {}
    for h, ic in rank_ic.items():
        signal = {
            "ic_mean": ic,
            "ic_std": 0.1,
            "icir": ic * 10,
            "ic_t": 1.0,
            "rank_ic_mean": ic,
            "rank_ic_std": 0.1,
            "rank_icir": ic * 10,
            "rank_ic_t": 1.0,
            "n_dates": 30,
            "hit_rate": 0.51,
            "spread_mean": ic / 10,
            "rank_ic_decay": ic,
            "decile_mean": [ic * (q - 4.5) / 100 for q in range(10)],
        }
        long_short = {key: ic for key in perf} | {"sharpe": ic * 50, "turnover": 0.4}
        top_k = {key: ic for key in perf} | {
            "turnover": 0.1,
            "excess_ann_return": ic * 2,
            "information_ratio": ic * 30,
        }
        jpx = {"score": ic * 5, "mean": ic / 100, "std": 0.002}
        horizons[f"{h}d"] = {"signal": signal, "long_short": long_short, "top_k": top_k, "jpx": jpx}
    return {"sessions_per_year": 245, "horizons": horizons}


def metrics_json(model: str, seed: int, shift: float = 0.0, split: str = "test") -> dict:
    folds = [summary({h: fold_ic(model, h, k, seed, shift) for h in HORIZONS}) for k in range(N_FOLDS)]
    mean = {h: statistics.mean(fold_ic(model, h, k, seed, shift) for k in range(N_FOLDS)) for h in HORIZONS}
    overall = summary(mean)
    deciles = {f"{h}d": overall["horizons"][f"{h}d"]["signal"]["decile_mean"] for h in HORIZONS}
    return {
        "model": model,
        "split": split,
        "horizons": list(HORIZONS),
        "seed": seed,
        "overall": overall,
        "folds": folds,
        "deciles": deciles,
    }


def dates(n: int = 30) -> np.ndarray:
    return np.busday_offset("2023-01-04", np.arange(n), roll="forward")


def write_eval(folder: Path, model: str, seed: int, shift: float = 0.0, daily: bool = True) -> None:
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(metrics_json(model, seed, shift)))
    if not daily:
        return
    rng = np.random.default_rng(len(model) + 7 * seed)
    d = dates()
    fold = np.repeat(np.arange(N_FOLDS), len(d) // N_FOLDS)
    rows = {"Date": [], "fold": [], "horizon": []}
    for h in HORIZONS:
        rows["Date"] += list(d.astype("datetime64[D]").astype(object))
        rows["fold"] += list(fold)
        rows["horizon"] += [h] * len(d)
    n = len(rows["Date"])
    daily_df = pl.DataFrame(rows).with_columns(
        **{
            c: rng.normal(0.001, 0.01, n)
            for c in (
                "ic",
                "rank_ic",
                "hit_rate",
                "spread",
                "ls_gross",
                "ls_net",
                "ls_turnover",
                "topk_gross",
                "topk_net",
                "topk_excess",
                "topk_turnover",
                "jpx_spread",
                "topix",
            )
        }
    )
    daily_df.write_parquet(folder / "daily.parquet")
    codes = ["13010", "13050", "72030", "99840"]
    pred = pl.DataFrame(
        {
            "Date": np.repeat(d.astype("datetime64[D]"), len(codes)),
            "Code": codes * len(d),
            "fold": np.repeat(fold, len(codes)),
        }
    ).with_columns(**{f"pred_{h}d": rng.normal(size=len(d) * len(codes)) for h in HORIZONS})
    if model == "atft":
        pred = pred.with_columns(
            **{f"q{q}_{h}d": pl.col(f"pred_{h}d") for q in (10, 25, 50, 75, 90) for h in HORIZONS}
        )
    pred.write_parquet(folder / "predictions.parquet")


def write_logs(run: Path) -> None:
    for k in range(N_FOLDS):
        lines = []
        for step in range(10, 110, 10):
            rec = {"kind": "train", "fold": k, "step": step, "epoch": step // 50, "loss": 1.0 / step}
            rec |= {"lr": 1e-3, "dates_per_s": 12.0, "grad_norm": 1.0}
            rec |= {f"grad_norm/{m}": (0.0 if m == "gat" else 0.5 / step) for m in MODULES}
            lines.append(rec)
            if step % 50 == 0:
                lines.append(
                    {
                        "kind": "valid",
                        "fold": k,
                        "step": step,
                        "epoch": step // 50,
                        "valid_rank_ic": 0.01 * step / 50,
                        "valid_rank_ic_h": {str(h): 0.01 for h in HORIZONS},
                    }
                )
        (run / f"fold_{k}").mkdir()
        (run / f"fold_{k}" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))


def write_run(root: Path, *, full: bool = True) -> Path:
    """A run folder as the contract lays it out; `full=False` keeps only the model's metrics.json."""
    run = root / "demo"
    run.mkdir()
    config = {
        "device": "cpu",
        "paths": {"raw": "data/demo/raw", "features": "data/demo/features", "runs": "runs/demo"},
        "fetch": {"base_url": "https://api.jquants.com/v2"},
        "train": {"name": "demo", "seed": 0},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    write_eval(run / "eval" / "test" / "atft", "atft", seed=0, daily=full)
    if not full:
        return run
    names = [f"feature_{i:02d}" for i in range(25)]
    inputs = {"input_hash": "ab12cd34" * 8, "n_features": len(names), "inputs": names, "horizons": [1, 5]}
    (run / "inputs.json").write_text(json.dumps(inputs))
    folds = [
        {
            "fold": k,
            "train": {"first": "2020-01-06", "last": "2022-06-30", "sessions": 600},
            "valid": {"first": "2022-08-01", "last": "2022-10-31", "sessions": 60},
            "test": {"first": f"2023-0{k + 1}-04", "last": f"2023-0{k + 2}-03", "sessions": 15},
        }
        for k in range(N_FOLDS)
    ]
    (run / "folds.json").write_text(json.dumps(folds))
    stages = {
        "train": {"wall_s": 321.5, "device": "cpu", "finished": "2024-05-01T10:00:00+09:00"},
        "evaluate": {"wall_s": 12.25, "device": "cpu", "finished": "2024-05-01T10:01:00+09:00"},
    }
    (run / "stages.json").write_text(json.dumps(stages))
    write_logs(run)
    for model in MODELS[1:]:
        write_eval(run / "eval" / "test" / model, model, seed=0)
    pl.DataFrame({"input": names, "weight": np.linspace(0.1, 0.01, len(names))}).write_csv(
        run / "eval" / "test" / "atft" / "vsn_weights.csv"
    )
    gains = pl.DataFrame(
        {
            "input": names * 2,
            "horizon": [1] * 25 + [5] * 25,
            "gain": list(range(1, 26)) + list(range(26, 1, -1)),
        }
    )
    gains.write_csv(run / "eval" / "test" / "lightgbm" / "importance.csv")
    for variant, shift in ABLATION_SHIFT.items():
        for seed in range(3):
            seed_run = run / "ablation" / variant / f"seed_{seed}"
            seed_run.mkdir(parents=True)
            (seed_run / "config.yaml").write_text(yaml.safe_dump(config))
            write_eval(seed_run / "eval" / "test" / "atft", "atft", seed, shift, daily=False)
    return run


class Page(HTMLParser):
    """The parts of the report the tests look at: sections, their headings, text, images and table rows."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, dict] = {}
        self.current: dict | None = None
        self.in_h2 = False
        self.row: list[str] | None = None
        self.cell: list[str] | None = None
        self.links: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        if tag == "section":
            self.current = {"h2": "", "text": [], "imgs": [], "rows": []}
            self.sections[attrs["id"]] = self.current
        elif tag == "h2":
            self.in_h2 = True
        elif tag == "img" and self.current is not None:
            self.current["imgs"].append(attrs["src"])
        elif tag == "tr":
            self.row = []
        elif tag in ("td", "th"):
            self.cell = []
        elif tag == "br" and self.cell is not None:
            self.cell.append(" ")
        for key in ("href", "src"):
            if key in attrs and tag != "img":
                self.links.append(attrs[key])

    def handle_endtag(self, tag):
        if tag == "section":
            self.current = None
        elif tag == "h2":
            self.in_h2 = False
        elif tag in ("td", "th") and self.row is not None:
            self.row.append("".join(self.cell or []))
            self.cell = None
        elif tag == "tr" and self.current is not None:
            self.current["rows"].append(self.row)
            self.row = None

    def handle_data(self, data):
        if self.current is None:
            return
        if self.in_h2:
            self.current["h2"] += data
        if self.cell is not None:
            self.cell.append(data)
        self.current["text"].append(data)


def parse(path: Path) -> tuple[str, Page]:
    text = path.read_text(encoding="utf-8")
    page = Page()
    page.feed(text)
    return text, page


def text_of(page: Page, sid: str) -> str:
    return "".join(page.sections[sid]["text"])


@pytest.fixture(scope="module")
def full_report(tmp_path_factory) -> tuple[Path, str, Page]:
    run = write_run(tmp_path_factory.mktemp("full"))
    path = render_report(run)
    return run, *parse(path)


def test_every_section_present_with_plots_embedded_and_nothing_external(full_report):
    run, text, page = full_report
    assert list(page.sections) == SECTION_IDS
    assert all(s["h2"].strip() for s in page.sections.values())
    expected_images = {
        "daily_rank_ic": 2,
        "cumulative_returns": 1,
        "deciles": 1,
        "learning_curves": 1,
        "grad_norms": 1,
        "vsn_weights": 1,
        "lgbm_importance": 1,
        "ablations": 1,
    }
    for sid, s in page.sections.items():
        assert len(s["imgs"]) == expected_images.get(sid, 0), sid
        for src in s["imgs"]:
            prefix = "data:image/png;base64,"
            assert src.startswith(prefix)
            assert base64.b64decode(src[len(prefix) :], validate=True).startswith(PNG)
    lowered = text.lower()
    assert "http://" not in lowered and "https://" not in lowered  # the config's fetch URL is left out
    assert "<script" not in lowered and "<link" not in lowered and "url(" not in lowered
    assert all(link.startswith("#") for link in page.links)  # only the in-page section links
    assert not list(run.glob(".*.tmp"))


def test_headline_numbers_are_the_run_metrics(full_report):
    run, _, page = full_report
    rows = page.sections["headline"]["rows"]
    assert rows[0] == [
        "h",
        "model",
        "RankIC",
        "RankIC IR",
        "L-S Sharpe",
        "top-K excess",
        "top-K IR",
        "JPX score",
    ]
    by_key = {(r[0], r[1]): r[2:] for r in rows[1:]}
    assert len(by_key) == len(HORIZONS) * len(MODELS)
    # ATFT h=1: folds 0, 1 of seeds 0 (this run; the ablation's seed_0 is the same seed), 1 and 2:
    # 0.021 0.031 0.025 0.035 0.029 0.039 -> mean 0.030, squared deviations 214e-6 / 5 -> std 0.00654.
    # The whole-split aggregates are seed 0's: RankIC 0.026 -> ICIR 0.26, Sharpe 1.30, excess 5.2%,
    # IR 0.78, JPX 0.13.
    assert by_key[("1d", "ATFT-GAT-FAN")] == [
        "+0.0300 ± 0.0065",
        "+0.260",
        "+1.30",
        "+5.2%",
        "+0.78",
        "+0.130",
    ]
    # LightGBM h=1, this run only: folds 0.011, 0.021 -> 0.016 ± 0.00707; overall 0.016.
    assert by_key[("1d", "LightGBM")] == ["+0.0160 ± 0.0071", "+0.160", "+0.80", "+3.2%", "+0.48", "+0.080"]
    caption = text_of(page, "headline")
    assert "seeds 0, 1, 2" in caption


def test_headline_rows_pool_folds_and_distinct_seeds(full_report):
    run, _, _ = full_report
    rows = {(r.horizon, r.model): r for r in headline_rows(run)}
    for h in HORIZONS:
        pooled = [fold_ic("atft", h, k, s) for s in range(3) for k in range(N_FOLDS)]
        r = rows[(h, "atft")]
        assert r.n_pooled == len(pooled) == 6
        # six values of order 0.03: sums in float64 are exact to ~1e-17
        assert r.rank_ic_mean == pytest.approx(statistics.mean(pooled), abs=1e-15)
        assert r.rank_ic_std == pytest.approx(statistics.stdev(pooled), abs=1e-15)
        oracle = [fold_ic("oracle", h, k, 0) for k in range(N_FOLDS)]
        assert rows[(h, "oracle")].rank_ic_mean == pytest.approx(statistics.mean(oracle), abs=1e-15)
        assert rows[(h, "oracle")].n_pooled == N_FOLDS
    assert headline(run).seeds == [0, 1, 2]


def test_ablation_shows_variants_and_what_each_part_adds(full_report):
    _, _, page = full_report
    rows = page.sections["ablations"]["rows"]
    table = {r[0]: r for r in rows}
    # full model, RankIC h=1 per seed: 0.026, 0.030, 0.034 -> 0.030 ± 0.004
    assert table["full model"][1:3] == ["0, 1, 2", "+0.0300 ± 0.0040"]
    assert table["without the GAT"][2] == "+0.0200 ± 0.0040"
    # full minus variant, seed by seed: the shifts exactly (std 0 up to float rounding)
    assert table["the GAT"][1:3] == ["0, 1, 2", "+0.0100 ± 0.0000"]
    assert table["FAN"][2] == "+0.0050 ± 0.0000"
    assert table["the graph's true structure"][2] == "+0.0080 ± 0.0000"


def test_folds_and_metadata(full_report):
    run, _, page = full_report
    folds = page.sections["folds"]["rows"]
    assert folds[0][:4] == ["fold", "train (sessions)", "valid (sessions)", "test (sessions)"]
    assert folds[1][:4] == ["0", "2020-01-06 .. 2022-06-30 (600)", "2022-08-01 .. 2022-10-31 (60)"] + [
        "2023-01-04 .. 2023-02-03 (15)"
    ]
    assert folds[1][4] == "+0.0210" and folds[2][4] == "+0.0310"  # ATFT's per-fold RankIC at h=1
    meta = text_of(page, "metadata")
    for item in ("ab12cd34" * 8, "321.5 s", "12.2 s", "orbax-checkpoint", "jax", "train:", "seed: 0"):
        assert item in meta
    assert "fetch" in meta  # the note says the fetch section is left out
    grads = text_of(page, "grad_norms")  # the fixture's GAT gradient is 0 in both folds, the others are not
    assert "gradient of 'gat' exactly 0 at every logged step in fold(s) 0, 1" in grads
    assert grads.count("exactly 0") == 1


def test_absent_parts_give_one_line_notes(tmp_path):
    run = write_run(tmp_path, full=False)
    text, page = parse(render_report(run))
    assert list(page.sections) == SECTION_IDS
    notes = {
        "headline": "no LightGBM evaluation in this run: run `gogooku baseline`",
        "daily_rank_ic": "no daily scores of the model (eval/test/atft/daily.parquet): run `gogooku "
        "evaluate`",
        "learning_curves": "no training logs (fold_<k>/metrics.jsonl) in this run: run `gogooku train`",
        "grad_norms": "no training logs",
        "vsn_weights": "no VSN selection weights",
        "lgbm_importance": "no LightGBM baseline in this run: run `gogooku baseline`",
        "ablations": "no ablation in this run: run `gogooku ablate`",
        "folds": "no fold table (folds.json) in this run",
    }
    for sid, note in notes.items():
        assert note in text_of(page, sid), sid
    assert "\n" not in text_of(page, "lgbm_importance")
    assert [sid for sid, s in page.sections.items() if s["imgs"]] == ["deciles"]
    assert [r[1] for r in page.sections["headline"]["rows"][1:]] == ["ATFT-GAT-FAN"] * len(HORIZONS)


def test_without_the_model_evaluation_it_is_a_user_error(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("device: cpu\n")
    with pytest.raises(GogookuError, match="gogooku evaluate"):
        render_report(run)
    assert not (run / "report.html").exists()


def test_report_replaces_an_old_one_through_a_temporary_sibling(tmp_path):
    run = write_run(tmp_path, full=False)
    (run / "report.html").write_text("old")
    out = render_report(run)
    assert out == run / "report.html" and out.read_text().startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []


runner = CliRunner()


def test_cli_prints_the_headline_and_the_path(tmp_path):
    run = write_run(tmp_path, full=False)
    out = tmp_path / "elsewhere.html"
    result = runner.invoke(app, ["report", "--run", str(run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and not (run / "report.html").exists()
    assert "ATFT-GAT-FAN" in result.output and "+0.0260 ± 0.0071" in result.output
    assert str(out) in result.output.replace("\n", "")


def test_cli_refuses_an_out_that_is_not_html(tmp_path):
    run = write_run(tmp_path, full=False)
    result = runner.invoke(app, ["report", "--run", str(run), "--out", str(tmp_path / "report.png")])
    assert result.exit_code == 2 and "expected an .html file name" in result.output
    assert not (tmp_path / "report.png").exists()


@pytest.mark.parametrize("make", ["missing", "file", "no_eval"])
def test_cli_bad_run_folder_is_one_line(tmp_path, make):
    target = tmp_path / "run"
    if make == "file":
        target.write_text("x")
    elif make == "no_eval":
        target.mkdir()
    result = runner.invoke(app, ["report", "--run", str(target)], env={"COLUMNS": "300"})  # no wrapping
    assert result.exit_code == 2
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output


def _break_json(run: Path) -> None:
    (run / "eval" / "test" / "atft" / "metrics.json").write_text("{")


def _drop_rank_ic(run: Path) -> None:
    path = run / "eval" / "test" / "atft" / "daily.parquet"
    write_eval(run / "daily_src", "atft", seed=0)
    pl.read_parquet(run / "daily_src" / "daily.parquet").drop("rank_ic").write_parquet(path)


def _break_log_line(run: Path) -> None:
    write_logs(run)
    path = run / "fold_1" / "metrics.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + '{"step": 2, "loss"\n' + "".join(lines[1:]))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_break_json, "eval/test/atft/metrics.json: not readable as JSON"),
        (_drop_rank_ic, "daily.parquet: lacks the column(s) rank_ic"),
        (_break_log_line, "fold_1/metrics.jsonl:2: not a JSON object"),
    ],
)
def test_damaged_files_are_one_line_errors(tmp_path, damage, message):
    run = write_run(tmp_path, full=False)
    damage(run)
    with pytest.raises(GogookuError) as err:
        render_report(run)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_log_line_still_being_written_is_left_out(tmp_path):
    run = write_run(tmp_path, full=False)
    write_logs(run)
    with (run / "fold_0" / "metrics.jsonl").open("a") as f:
        f.write('{"kind": "train", "fold": 0, "step": 110, "lo')  # no newline yet: a run in progress
    _, page = parse(render_report(run))
    assert page.sections["learning_curves"]["imgs"] and page.sections["grad_norms"]["imgs"]
