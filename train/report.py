"""`gogooku report`: one self-contained HTML page about a run folder (docs/report.md).

The page reads only the run folder's artifacts (config.yaml, inputs.json, folds.json, stages.json,
fold_<k>/metrics.jsonl, eval/<split>/<model>/..., ablation/<variant>/seed_<s>/...), so it can be rendered
anywhere, any time after the commands that wrote them. Every number comes from the scorer's metrics.json and
daily.parquet; nothing here computes a metric, it only averages the scorer's per-fold and per-seed values.

Plots are PNGs embedded as data URIs and the CSS is inline: the file opens offline and fetches nothing. A
section whose inputs are absent says so in one line; only the model's own evaluation is required.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import importlib.metadata
import io
import json
import math
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml

from etl.errors import GogookuError
from etl.files import write_atomic

MODELS = {"atft": "ATFT-GAT-FAN", "lightgbm": "LightGBM", "oracle": "oracle", "reversal_5d": "5-day reversal"}
PRODUCERS = {  # what writes each model's eval/<split>/<model>/ folder
    "atft": "run `gogooku evaluate`",
    "lightgbm": "run `gogooku baseline`",
    "oracle": "`gogooku evaluate` scores it on the synthetic market only",
    "reversal_5d": "run `gogooku evaluate`",
}
COLORS = {"atft": "#1f5fa8", "lightgbm": "#d9822b", "oracle": "#8c8c8c", "reversal_5d": "#3a9a5b"}
SPLITS = ("test", "valid")  # the report shows the first split the model was evaluated on
MODULES = ("static", "vsn", "temporal", "gat", "fusion", "heads")
VARIANTS = {
    "full": "full model",
    "no_gat": "without the GAT",
    "no_fan": "without FAN",
    "no_highway": "without the highways",
    "shuffled_graph": "graph shuffled across stocks",
}
PARTS = {
    "no_gat": "the GAT",
    "no_fan": "FAN",
    "no_highway": "the highways",
    "shuffled_graph": "the graph's true structure",
}
VERSIONS = ("gogooku", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "lightgbm", "polars", "numpy")
TOP_N = 20
DASH = "—"

# --- formatting: one rule per kind of number, shared by the HTML and the terminal ---


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def fmt_num(x: Any, digits: int, sign: bool = True) -> str:
    """A number with a fixed count of decimals (signed by default); a dash where it is undefined."""
    return f"{x:{'+' if sign else ''}.{digits}f}" if _finite(x) else DASH


def fmt_pct(x: Any, digits: int = 1, sign: bool = True) -> str:
    """A return as a percentage (signed by default)."""
    return f"{100 * x:{'+' if sign else ''}.{digits}f}%" if _finite(x) else DASH


def fmt_pm(mean: Any, std: Any, digits: int) -> str:
    """mean ± std; the mean alone where the std is undefined (fewer than two values)."""
    if not _finite(std):
        return fmt_num(mean, digits)
    return f"{fmt_num(mean, digits)} ± {fmt_num(std, digits, sign=False)}"


def _mean_std(values: Iterable[Any]) -> tuple[float, float, int]:
    """Mean and sample std (ddof 1) of the finite values, and their count; NaN where undefined."""
    x = np.array([v for v in values if _finite(v)], float)
    mean = float(x.mean()) if x.size else math.nan
    return mean, float(x.std(ddof=1)) if x.size >= 2 else math.nan, int(x.size)


# --- reading the run folder ---


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise GogookuError(f"{path}: not readable as JSON ({err})".splitlines()[0]) from None


def _horizon(h: Any) -> int:
    """A horizon label (1, "1" or "1d") as its session count."""
    try:
        return int(str(h).removesuffix("d"))
    except ValueError:
        raise GogookuError(f"horizon {h!r}: expected a session count such as 1 or '1d'") from None


def _by_horizon(mapping: dict[str, Any], h: int, where: Path) -> Any:
    """The entry of horizon h in a mapping keyed "1d" (as summarise writes) or "1"."""
    for key in (f"{h}d", str(h)):
        if key in mapping:
            return mapping[key]
    raise GogookuError(f"{where}: no entry for horizon {h}d")


def _value(summary: dict[str, Any], h: int, section: str, key: str, where: Path) -> float:
    """One aggregate of a summarise() dict at horizon h; NaN where the scorer wrote null."""
    try:
        value = _by_horizon(summary["horizons"], h, where)[section][key]
    except (KeyError, TypeError):
        raise GogookuError(f"{where}: no '{section}.{key}' for horizon {h}d (not a scorer summary)") from None
    return float(value) if value is not None else math.nan


@dataclass
class Eval:
    """One model's evaluation of one split: the folder eval/<split>/<model>/ and its metrics.json."""

    model: str
    folder: Path
    metrics: dict[str, Any]

    @property
    def path(self) -> Path:
        return self.folder / "metrics.json"

    @property
    def horizons(self) -> list[int]:
        if "horizons" in self.metrics:
            return [_horizon(h) for h in self.metrics["horizons"]]
        return [_horizon(h) for h in self.overall.get("horizons", {})]

    @property
    def overall(self) -> dict[str, Any]:
        if not isinstance(self.metrics.get("overall"), dict):
            raise GogookuError(f"{self.path}: no 'overall' summary")
        return self.metrics["overall"]

    @property
    def folds(self) -> list[dict[str, Any]]:
        return [f for f in self.metrics.get("folds") or [] if isinstance(f, dict)]

    def value(self, h: int, section: str, key: str) -> float:
        return _value(self.overall, h, section, key, self.path)

    def fold_values(self, h: int, section: str, key: str) -> list[float]:
        return [_value(f, h, section, key, self.path) for f in self.folds]


def _read_eval(folder: Path, model: str) -> Eval | None:
    path = folder / "metrics.json"
    if not path.is_file():
        return None
    metrics = _read_json(path)
    if not isinstance(metrics, dict):
        raise GogookuError(f"{path}: expected a JSON object")
    return Eval(model, folder, metrics)


def _check_run_dir(run_dir: str | Path) -> Path:
    run = Path(run_dir)
    if not run.exists():
        raise GogookuError(f"{run}: no such run folder (gogooku train writes one under paths.runs)")
    if not run.is_dir():
        raise GogookuError(f"{run}: not a folder; --run takes a run folder such as runs/demo")
    return run


def _split(run: Path) -> str:
    """The split the report shows: the first of SPLITS on which the model was evaluated."""
    for split in SPLITS:
        if (run / "eval" / split / "atft" / "metrics.json").is_file():
            return split
    raise GogookuError(
        f"{run} holds no evaluation of the model (eval/test/atft/metrics.json): run `gogooku evaluate` first"
    )


def _evals(run: Path, split: str) -> dict[str, Eval]:
    out = {}
    for model in MODELS:
        ev = _read_eval(run / "eval" / split / model, model)
        if ev is not None:
            out[model] = ev
    return out


def _seed_dirs(folder: Path) -> list[tuple[int, Path]]:
    """The seed_<s> run folders under an ablation variant, by seed."""
    found = []
    for p in folder.glob("seed_*"):
        tail = p.name.removeprefix("seed_")
        if p.is_dir() and tail.isdigit():
            found.append((int(tail), p))
    return sorted(found)


def _seed_of(ev: Eval, default: int | None) -> int | None:
    seed = ev.metrics.get("seed", default)
    return seed if isinstance(seed, int) else default


# --- the headline: one source for the HTML table and the terminal ---


@dataclass(frozen=True)
class HeadlineRow:
    """One model at one horizon. RankIC is pooled over folds and seeds; the rest is the run's whole split."""

    horizon: int
    model: str
    rank_ic_mean: float  # mean over the pooled per-fold RankIC means
    rank_ic_std: float  # their sample std (ddof 1); NaN with fewer than two
    n_pooled: int  # how many fold x seed values were pooled
    rank_icir: float  # daily RankIC mean / std over all dates of the split (not annualised)
    ls_sharpe: float  # long-short quintile portfolio, net of costs, annualised
    topk_excess: float  # top-K portfolio's annualised mean return over TOPIX, net of costs
    topk_ir: float  # its information ratio against TOPIX, annualised
    jpx_score: float  # the JPX competition score: mean / std of the daily spread return


@dataclass(frozen=True)
class Headline:
    split: str
    horizons: list[int]
    # the model's seeds pooled into RankIC: this run's, then the ablation's full model's
    seeds: list[int | None]
    rows: list[HeadlineRow]
    absent: list[str]  # models without an evaluation on the split

    @property
    def caption(self) -> str:
        seeds = ", ".join("?" if s is None else str(s) for s in self.seeds)
        pooled = (
            f"folds of this run and of the ablation's full model (seeds {seeds})"
            if len(self.seeds) > 1
            else "the folds of this run"
        )
        return (
            f"{self.split} split. RankIC: mean ± std (ddof 1) of the per-fold RankIC over {pooled}; the "
            "model's other columns, and every column of the baselines, are this run's over all "
            f"{self.split} dates. L-S: the long-short quintile portfolio; top-K: the TopkDropout portfolio, "
            "its excess return (annualised) and information ratio against TOPIX; Sharpe and IR annualised, "
            "all net of costs."
        )


HEADLINE_COLUMNS = (
    "h",
    "model",
    "RankIC",
    "RankIC\nIR",
    "L-S\nSharpe",
    "top-K\nexcess",
    "top-K\nIR",
    "JPX\nscore",
)


def headline_cells(row: HeadlineRow) -> list[str]:
    """A headline row as text, in HEADLINE_COLUMNS order: RankIC 4 decimals, ratios 2-3, returns in %."""
    return [
        f"{row.horizon}d",
        MODELS[row.model],
        fmt_pm(row.rank_ic_mean, row.rank_ic_std, 4),
        fmt_num(row.rank_icir, 3),
        fmt_num(row.ls_sharpe, 2),
        fmt_pct(row.topk_excess),
        fmt_num(row.topk_ir, 2),
        fmt_num(row.jpx_score, 3),
    ]


def _full_model_seeds(run: Path, split: str, main: Eval) -> list[tuple[int | None, Eval]]:
    """The model's runs pooled into the headline's RankIC: this run, then each seed of the ablation's full
    model whose seed differs from the ones already taken (the ablation's seed 0 may be this very run)."""
    main_seed = _seed_of(main, None)
    runs: list[tuple[int | None, Eval]] = [(main_seed, main)]
    for seed, folder in _seed_dirs(run / "ablation" / "full"):
        ev = _read_eval(folder / "eval" / split / "atft", "atft")
        if ev is not None and _seed_of(ev, seed) not in {s for s, _ in runs}:
            runs.append((_seed_of(ev, seed), ev))
    return runs


def headline(run_dir: str | Path) -> Headline:
    """The headline table of a run: every evaluated model at every horizon of the model's evaluation."""
    run = _check_run_dir(run_dir)
    split = _split(run)
    evals = _evals(run, split)
    seeded = _full_model_seeds(run, split, evals["atft"])
    horizons = evals["atft"].horizons
    rows = []
    for h in horizons:
        for model, ev in evals.items():
            pooled = [ev] if model != "atft" else [e for _, e in seeded]
            per_fold = [v for e in pooled for v in (e.fold_values(h, "signal", "rank_ic_mean") or [])]
            if not per_fold:  # no per-fold summaries: each run's whole split counts once
                per_fold = [e.value(h, "signal", "rank_ic_mean") for e in pooled]
            mean, std, n = _mean_std(per_fold)
            rows.append(
                HeadlineRow(
                    horizon=h,
                    model=model,
                    rank_ic_mean=mean,
                    rank_ic_std=std,
                    n_pooled=n,
                    rank_icir=ev.value(h, "signal", "rank_icir"),
                    ls_sharpe=ev.value(h, "long_short", "sharpe"),
                    topk_excess=ev.value(h, "top_k", "excess_ann_return"),
                    topk_ir=ev.value(h, "top_k", "information_ratio"),
                    jpx_score=ev.value(h, "jpx", "score"),
                )
            )
    absent = [m for m in MODELS if m not in evals]
    return Headline(split, horizons, [s for s, _ in seeded], rows, absent)


def headline_rows(run_dir: str | Path) -> list[HeadlineRow]:
    """The rows of the headline table (what `gogooku report` prints and the HTML shows)."""
    return headline(run_dir).rows


# --- daily series ---

DAILY_COLUMNS = (
    "Date",
    "fold",
    "horizon",
    "rank_ic",
    "ls_gross",
    "ls_net",
    "topk_gross",
    "topk_net",
    "topix",
)


def _read_daily(ev: Eval) -> pl.DataFrame | None:
    """daily.parquet with the columns the plots use, horizons as integers, sorted by date; None if absent."""
    path = ev.folder / "daily.parquet"
    if not path.is_file():
        return None
    try:
        df = pl.read_parquet(path)
    except Exception as err:  # a damaged file: Polars raises several kinds
        raise GogookuError(f"{path}: not a readable Parquet file ({err})".splitlines()[0]) from None
    missing = [c for c in DAILY_COLUMNS if c not in df.columns]
    if missing:
        raise GogookuError(f"{path}: lacks the column(s) {', '.join(missing)}")
    date = pl.col("Date")
    if df.schema["Date"] == pl.String:
        date = date.str.to_date()
    floats = [pl.col(c).cast(pl.Float64).fill_null(math.nan) for c in DAILY_COLUMNS[3:]]
    horizon = pl.col("horizon").cast(pl.String).str.strip_suffix("d").cast(pl.Int64)
    return df.select(date.cast(pl.Date), pl.col("fold"), horizon, *floats).sort("Date")


def _series(df: pl.DataFrame, h: int, column: str) -> tuple[np.ndarray, np.ndarray]:
    part = df.filter(pl.col("horizon") == h)
    return part["Date"].to_numpy(), part[column].to_numpy()


def _cumulative_return(r: np.ndarray) -> np.ndarray:
    """Compounded return since the first day; a day without a return (NaN) earns nothing."""
    return np.cumprod(1.0 + np.nan_to_num(r)) - 1.0


# --- plots ---

PLOT_STYLE = {
    "figure.dpi": 100,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.fontsize": 8,
    "legend.frameon": False,
}


def _figure(nrows: int, ncols: int, width: float, height: float) -> tuple[Any, np.ndarray]:
    """A figure on the Agg canvas (no pyplot state) and its axes as a 2-D array."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, np.atleast_2d(np.asarray(fig.subplots(nrows, ncols, squeeze=False)))


def _panels(n: int, height: float) -> tuple[Any, list[Any]]:
    """n small panels, three to a row (the rest of the last row hidden)."""
    ncols = min(n, 3)
    nrows = -(-n // ncols)
    fig, axes = _figure(nrows, ncols, 10, height * nrows)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _img(fig: Any, alt: str) -> str:
    """The figure as an <img> with a base64 PNG data URI (no metadata text in the file)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _date_axis(ax: Any) -> None:
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def _percent_axis(ax: Any, axis: str = "y", decimals: int = 0) -> None:
    from matplotlib.ticker import PercentFormatter

    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(PercentFormatter(1.0, decimals=decimals))


def _fold_starts(ax: Any, df: pl.DataFrame, h: int) -> None:
    """Dotted vertical lines where a new fold's dates begin."""
    part = df.filter(pl.col("horizon") == h)
    starts = part.group_by("fold").agg(pl.col("Date").min())["Date"].sort().to_numpy()
    for x in starts[1:]:
        ax.axvline(x, color="#999", linestyle=":", linewidth=0.8)


# --- HTML pieces ---


def _e(text: Any) -> str:
    return html.escape(str(text))


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _table(
    header: list[str], rows: list[list[str]], left: int = 1, row_class: list[str] | None = None
) -> str:
    """A plain table; the first `left` columns are left-aligned (labels), the rest right-aligned (numbers)."""
    cls = lambda i: ' class="l"' if i < left else ""
    head = "".join(f"<th{cls(i)}>{_e(h).replace(chr(10), '<br>')}</th>" for i, h in enumerate(header))
    body = []
    for r, cells in enumerate(rows):
        tr = f' class="{row_class[r]}"' if row_class and row_class[r] else ""
        body.append(f"<tr{tr}>" + "".join(f"<td{cls(i)}>{_e(c)}</td>" for i, c in enumerate(cells)) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


# --- sections: each returns its HTML body (an <h2> is added around it) ---


def _headline_section(head: Headline) -> str:
    row_class = []
    for i, row in enumerate(head.rows):
        first = i == 0 or head.rows[i - 1].horizon != row.horizon
        row_class.append(" ".join(c for c in ("first" if first else "", row.model) if c))
    table = _table(list(HEADLINE_COLUMNS), [headline_cells(r) for r in head.rows], 2, row_class)
    notes = [_note(f"no {MODELS[m]} evaluation in this run: {PRODUCERS[m]}") for m in head.absent]
    return f'<p class="caption">{_e(head.caption)}</p>{table}{"".join(notes)}'


def _summary(head: Headline, evals: dict[str, Eval], dailies: dict[str, pl.DataFrame]) -> str:
    """The first paragraph: the model's RankIC against each baseline, and its portfolios, at the first
    horizon."""
    h = head.horizons[0]
    at = {r.model: r for r in head.rows if r.horizon == h}
    model = at["atft"]
    atft_daily = dailies.get("atft")
    if atft_daily is not None and atft_daily.height:
        dates = atft_daily.filter(pl.col("horizon") == h)["Date"]
        span = f"{dates.n_unique()} {head.split} dates from {dates.min()} to {dates.max()}"
    else:
        n = evals["atft"].value(h, "signal", "n_dates")
        span = f"{int(n) if _finite(n) else 'the'} {head.split} dates"
    n_folds = len(evals["atft"].folds)
    over = f"{model.n_pooled} per-fold values" if n_folds else f"{model.n_pooled} runs"
    over += f" from {len(head.seeds)} seeds" if len(head.seeds) > 1 else ""
    text = [
        f"On {span}{f' in {n_folds} walk-forward folds' if n_folds else ''}, ATFT-GAT-FAN ranks the "
        f"{h}-session forward return with a RankIC of {fmt_pm(model.rank_ic_mean, model.rank_ic_std, 4)} "
        f"(mean ± std of {over})."
    ]
    versus = []
    for other in ("lightgbm", "reversal_5d"):
        if other in at:
            theirs = at[other].rank_ic_mean
            side = (
                "above"
                if model.rank_ic_mean > theirs
                else "below"
                if model.rank_ic_mean < theirs
                else "equal to"
            )
            versus.append(f"{side} {MODELS[other]} ({fmt_num(theirs, 4)})")
    if versus:
        text.append(f"That is {' and '.join(versus)}.")
    if "oracle" in at:
        text.append(
            f"The oracle, which knows the synthetic market's true expected returns, reaches "
            f"{fmt_num(at['oracle'].rank_ic_mean, 4)}: the ceiling."
        )
    text.append(
        f"Net of costs, the model's long-short portfolio has a Sharpe ratio of {fmt_num(model.ls_sharpe, 2)} "
        f"and its top-K portfolio earns {fmt_pct(model.topk_excess)} a year over TOPIX "
        f"(IR {fmt_num(model.topk_ir, 2)})."
    )
    return " ".join(text)


def _daily_rank_ic_section(head: Headline, dailies: dict[str, pl.DataFrame]) -> str:
    if "atft" not in dailies:
        return _note(
            f"no daily scores of the model (eval/{head.split}/atft/daily.parquet): run `gogooku evaluate`"
        )
    h0, hs = head.horizons[0], head.horizons
    fig, ax = _figure(1, 1, 10, 2.8)
    ax = ax[0, 0]
    dates, ic = _series(dailies["atft"], h0, "rank_ic")
    ax.vlines(dates, 0, ic, color=COLORS["atft"], alpha=0.35, linewidth=1.0, label="daily RankIC")
    rolling = pl.Series(ic).rolling_mean(20, min_samples=10).to_numpy()
    ax.plot(dates, rolling, color=COLORS["atft"], linewidth=1.4, label="20-day mean")
    ax.axhline(0, color="#333", linewidth=0.6)
    _fold_starts(ax, dailies["atft"], h0)
    ax.set_title(f"ATFT-GAT-FAN: daily RankIC at h = {h0}d (dotted lines: fold starts)")
    ax.legend(loc="upper left")
    _date_axis(ax)
    daily_img = _img(fig, f"daily RankIC at h={h0}d")

    fig, axes = _panels(len(hs), 2.6)
    for ax, h in zip(axes, hs, strict=True):
        for model, df in dailies.items():
            dates, ic = _series(df, h, "rank_ic")
            ax.plot(
                dates, np.cumsum(np.nan_to_num(ic)), color=COLORS[model], linewidth=1.2, label=MODELS[model]
            )
        ax.set_title(f"cumulative RankIC, h = {h}d")
        _date_axis(ax)
    axes[0].legend(loc="upper left")
    return daily_img + _img(fig, "cumulative RankIC per horizon")


def _cumulative_returns_section(
    head: Headline, evals: dict[str, Eval], dailies: dict[str, pl.DataFrame]
) -> str:
    if "atft" not in dailies:
        return _note(
            f"no daily scores of the model (eval/{head.split}/atft/daily.parquet): run `gogooku evaluate`"
        )
    h = head.horizons[0]
    fig, axes = _figure(1, 2, 10, 3.2)
    for ax, book, title in zip(axes[0], ("ls", "topk"), ("long-short quintiles", "top-K"), strict=True):
        for model, df in dailies.items():
            for kind, style in (("net", "-"), ("gross", "--"))[: 2 if model == "atft" else 1]:
                dates, r = _series(df, h, f"{book}_{kind}")
                label = f"{MODELS[model]} {kind}"
                ax.plot(dates, _cumulative_return(r), style, color=COLORS[model], linewidth=1.1, label=label)
        if book == "topk":
            dates, r = _series(dailies["atft"], h, "topix")
            ax.plot(dates, _cumulative_return(r), color="#222", linewidth=1.0, label="TOPIX")
        ax.set_title(f"cumulative {title} return, h = {h}d")
        ax.axhline(0, color="#333", linewidth=0.6)
        _percent_axis(ax)
        _date_axis(ax)
        ax.legend(loc="upper left")
    rows = []
    for model, ev in evals.items():
        rows.append(
            [
                MODELS[model],
                fmt_pct(ev.value(h, "long_short", "gross_ann_return")),
                fmt_pct(ev.value(h, "long_short", "ann_return")),
                fmt_num(ev.value(h, "long_short", "sharpe"), 2),
                fmt_pct(ev.value(h, "long_short", "max_drawdown")),
                fmt_pct(ev.value(h, "long_short", "turnover"), 0, sign=False),
                fmt_pct(ev.value(h, "top_k", "gross_ann_return")),
                fmt_pct(ev.value(h, "top_k", "ann_return")),
                fmt_pct(ev.value(h, "top_k", "max_drawdown")),
                fmt_pct(ev.value(h, "top_k", "turnover"), 0, sign=False),
            ]
        )
    header = [
        "model",
        "L-S gross ann.",
        "L-S net ann.",
        "L-S Sharpe",
        "L-S max DD",
        "L-S turnover/day",
        "top-K gross ann.",
        "top-K net ann.",
        "top-K max DD",
        "top-K turnover/day",
    ]
    caption = (
        f'<p class="caption">h = {h}d, whole {head.split} split: returns annualised (compounded), max DD the '
        "largest fall from a peak, turnover the mean daily sum of weight changes. The plot shows each "
        "model net of costs and ATFT-GAT-FAN also gross (dashed); TOPIX is the top-K benchmark.</p>"
    )
    return _img(fig, f"cumulative portfolio returns at h={h}d") + caption + _table(header, rows)


def _deciles(ev: Eval, h: int) -> list[float]:
    deciles = ev.metrics.get("deciles")
    values = (
        _by_horizon(deciles, h, ev.path)
        if isinstance(deciles, dict)
        else _by_horizon(ev.overall["horizons"], h, ev.path)["signal"]["decile_mean"]
    )
    return [math.nan if v is None else float(v) for v in values]


def _deciles_section(head: Headline, evals: dict[str, Eval]) -> str:
    hs = head.horizons
    fig, axes = _panels(len(hs), 2.6)
    width = 0.8 / len(evals)
    for ax, h in zip(axes, hs, strict=True):
        for i, (model, ev) in enumerate(evals.items()):
            d = _deciles(ev, h)
            x = np.arange(1, len(d) + 1) - 0.4 + width * (i + 0.5)
            ax.bar(x, d, width=width, color=COLORS[model], label=MODELS[model])
        ax.axhline(0, color="#333", linewidth=0.6)
        ax.set_title(f"mean {h}d return by decile")
        ax.set_xlabel(f"bin of the prediction ({len(d)} = highest)")
        ax.set_xticks(range(1, len(d) + 1))
        _percent_axis(ax, decimals=2)
    axes[0].legend(loc="upper left")
    return _img(fig, "mean forward return by prediction decile")


def _read_logs(run: Path) -> dict[int, list[dict[str, Any]]]:
    """fold_<k>/metrics.jsonl of each fold, by fold number: the records with a step. A last line without its
    newline is still being written (a run in progress) and is left for the next report."""
    logs = {}
    for folder in run.glob("fold_*"):
        tail = folder.name.removeprefix("fold_")
        path = folder / "metrics.jsonl"
        if not (tail.isdigit() and path.is_file()):
            continue
        lines = path.read_text().split("\n")[:-1]  # complete lines only
        records = []
        for i, line in enumerate(lines, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except ValueError:
                    raise GogookuError(f"{path}:{i}: not a JSON object") from None
        logs[int(tail)] = [r for r in records if isinstance(r, dict) and _finite(r.get("step"))]
    return dict(sorted(logs.items()))


def _fold_color(k: int) -> str:
    return ("#1f5fa8", "#d9822b", "#3a9a5b", "#b8413a", "#7b5ea7", "#8c6d31", "#d36fb0", "#5f5f5f")[k % 8]


NO_LOGS = "no training logs (fold_<k>/metrics.jsonl) in this run: run `gogooku train`"


def _learning_curves_section(logs: dict[int, list[dict[str, Any]]]) -> str:
    if not logs:
        return _note(NO_LOGS)
    fig, axes = _figure(1, 2, 10, 3.0)
    loss_ax, ic_ax = axes[0]
    for k, records in logs.items():
        train = [r for r in records if _finite(r.get("loss")) and "valid_rank_ic" not in r]
        valid = [r for r in records if "valid_rank_ic" in r]
        color = _fold_color(k)
        loss_ax.plot([r["step"] for r in train], [r["loss"] for r in train], color=color, label=f"fold {k}")
        ic = [r["valid_rank_ic"] if _finite(r["valid_rank_ic"]) else math.nan for r in valid]
        ic_ax.plot([r["step"] for r in valid], ic, "o-", color=color, markersize=3, label=f"fold {k}")
    loss_ax.set_title("training loss")
    ic_ax.set_title("validation RankIC (early-stopping objective)")
    ic_ax.axhline(0, color="#333", linewidth=0.6)
    for ax in (loss_ax, ic_ax):
        ax.set_xlabel("step")
        ax.legend(loc="best", ncols=2)
    return _img(fig, "learning curves per fold")


def _grad_norms_section(logs: dict[int, list[dict[str, Any]]]) -> str:
    if not logs:
        return _note(NO_LOGS)
    found = {
        k.removeprefix("grad_norm/")
        for rs in logs.values()
        for r in rs
        for k in r
        if k.startswith("grad_norm/")
    }
    modules = [m for m in MODULES if m in found] + sorted(found - set(MODULES))
    if not modules:
        return _note("the training logs hold no per-module gradient norms (grad_norm/<module>)")
    from matplotlib.ticker import NullFormatter

    fig, axes = _panels(len(modules), 2.4)

    stuck: dict[str, list[int]] = {}  # module -> folds where every logged norm is exactly 0
    for ax, module in zip(axes, modules, strict=True):
        key = f"grad_norm/{module}"
        for k, records in logs.items():
            pts = [(r["step"], r[key]) for r in records if _finite(r.get(key))]
            if pts and all(v == 0 for _, v in pts):
                stuck.setdefault(module, []).append(k)
            steps, norms = [s for s, v in pts if v > 0], [v for _, v in pts if v > 0]
            ax.plot(steps, norms, color=_fold_color(k), label=f"fold {k}")
        if any(len(line.get_xdata()) for line in ax.lines):
            ax.set_yscale("log")
            ax.yaxis.set_minor_formatter(NullFormatter())
        else:
            ax.text(0.5, 0.5, "exactly 0", transform=ax.transAxes, ha="center", color="#b8413a")
            ax.set_xticks([]), ax.set_yticks([])
        ax.set_title(module + (" (exactly 0 in a fold)" if module in stuck else ""))
        ax.set_xlabel("step")
    axes[0].legend(loc="best")
    notes = [
        _note(
            f"gradient of '{m}' exactly 0 at every logged step in fold(s) {', '.join(map(str, ks))}: "
            "it is not learning"
        )
        for m, ks in stuck.items()
    ]
    return _img(fig, "per-module gradient norms") + "".join(notes)


def _barh(labels: list[str], values: list[float], title: str, xlabel: str, ref: float | None) -> Any:
    fig, ax = _figure(1, 1, 10, 0.22 * len(labels) + 0.9)
    ax = ax[0, 0]
    y = np.arange(len(labels))
    ax.barh(y, values, color=COLORS["atft"])
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    if ref is not None:
        ax.axvline(ref, color="#b8413a", linestyle=":", linewidth=1.0)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.grid(axis="y", visible=False)
    return fig


def _read_csv(path: Path, columns: tuple[str, ...]) -> pl.DataFrame:
    try:
        df = pl.read_csv(path)
    except Exception as err:  # Polars raises several kinds on a malformed file
        raise GogookuError(f"{path}: not a readable CSV file ({err})".splitlines()[0]) from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise GogookuError(f"{path}: lacks the column(s) {', '.join(missing)}")
    return df


def _vsn_section(head: Headline, evals: dict[str, Eval]) -> str:
    path = evals["atft"].folder / "vsn_weights.csv"
    if not path.is_file():
        return _note(
            f"no VSN selection weights (eval/{head.split}/atft/vsn_weights.csv): run `gogooku evaluate`"
        )
    df = _read_csv(path, ("input",))
    numeric = [c for c, t in df.schema.items() if c != "input" and t.is_numeric()]
    if not numeric:
        raise GogookuError(f"{path}: no numeric weight column beside 'input'")
    df = df.select("input", pl.col(numeric[0]).alias("weight")).sort("weight", descending=True)
    top = df.head(TOP_N)
    fig = _barh(
        top["input"].to_list(),
        top["weight"].to_list(),
        f"VSN mean selection weight, top {len(top)} of {df.height} inputs (dotted: uniform 1/{df.height})",
        "mean selection weight",
        1.0 / df.height,
    )
    return _img(fig, "VSN selection weights")


def _lgbm_section(run: Path, split: str) -> str:
    path = run / "eval" / split / "lightgbm" / "importance.csv"
    if not path.is_file():
        return _note("no LightGBM baseline in this run: run `gogooku baseline`")
    df = _read_csv(path, ("input", "horizon", "gain"))
    share = (
        df.with_columns((pl.col("gain") / pl.col("gain").sum().over("horizon")).alias("share"))
        .group_by("input")
        .agg(pl.col("share").mean())
        .sort(["share", "input"], descending=[True, False])
    )
    top = share.head(TOP_N)
    n_h = df["horizon"].n_unique()
    fig = _barh(
        top["input"].to_list(),
        top["share"].to_list(),
        f"LightGBM gain importance, top {len(top)} of {share.height} inputs "
        f"(share of each horizon's total gain, mean over {n_h} horizon{'s' if n_h > 1 else ''})",
        "share of total gain",
        None,
    )
    _percent_axis(fig.axes[0], "x")
    return _img(fig, "LightGBM gain importance")


# --- ablations ---

ABLATION_METRICS = (  # (column, section, key, formatter)
    ("RankIC", "signal", "rank_ic_mean", lambda m, s: fmt_pm(m, s, 4)),
    ("RankICIR", "signal", "rank_icir", lambda m, s: fmt_pm(m, s, 3)),
    ("long-short Sharpe", "long_short", "sharpe", lambda m, s: fmt_pm(m, s, 2)),
    ("top-K excess return", "top_k", "excess_ann_return", lambda m, s: _pm_pct(m, s)),
    ("JPX score", "jpx", "score", lambda m, s: fmt_pm(m, s, 3)),
)


def _pm_pct(mean: float, std: float) -> str:
    if not _finite(std):
        return fmt_pct(mean)
    return f"{fmt_pct(mean)} ± {100 * std:.1f}%"


def ablation_values(
    run: Path, split: str, h: int
) -> tuple[dict[str, dict[int, dict[str, float]]], list[str]]:
    """Per variant and seed, the model's whole-split aggregates at horizon h (ABLATION_METRICS' keys); and the
    seed folders that hold no evaluation. Variants in VARIANTS order, then any other folder by name."""
    values: dict[str, dict[int, dict[str, float]]] = {}
    unevaluated = []
    variants = sorted(p.name for p in (run / "ablation").iterdir() if p.is_dir())
    for variant in [v for v in VARIANTS if v in variants] + [v for v in variants if v not in VARIANTS]:
        for seed, folder in _seed_dirs(run / "ablation" / variant):
            ev = _read_eval(folder / "eval" / split / "atft", "atft")
            if ev is None:
                unevaluated.append(f"{variant}/{folder.name}")
                continue
            values.setdefault(variant, {})[seed] = {
                key: ev.value(h, section, key) for _, section, key, _ in ABLATION_METRICS
            }
    return values, unevaluated


@dataclass(frozen=True)
class AblationStat:
    """One variant's value of one metric across seeds, and what the part it removes adds to the full model."""

    variant: str
    seeds: list[int]
    mean: float  # over the variant's seeds
    std: float  # their sample std (ddof 1); NaN with fewer than two
    paired_seeds: list[int]  # the seeds both it and the full model have
    adds_mean: float  # full minus the variant, seed by seed over paired_seeds: mean (NaN for full itself)
    adds_std: float  # and sample std (ddof 1)


def ablation_stats(values: dict[str, dict[int, dict[str, float]]], key: str) -> list[AblationStat]:
    """Per variant of `ablation_values`, the mean ± std across seeds of `key` and the paired difference to
    the full model: the one aggregation behind the report's ablation tables and `gogooku ablate`'s."""
    full = values.get("full")
    out = []
    for variant, seeds in values.items():
        mean, std, _ = _mean_std(v[key] for v in seeds.values())
        common = sorted(set(seeds) & set(full)) if full is not None and variant != "full" else []
        adds_mean, adds_std, _ = _mean_std(full[s][key] - seeds[s][key] for s in common)
        out.append(AblationStat(variant, sorted(seeds), mean, std, common, adds_mean, adds_std))
    return out


def _ablations_section(run: Path, head: Headline) -> str:
    if not (run / "ablation").is_dir():
        return _note("no ablation in this run: run `gogooku ablate`")
    h = head.horizons[0]
    values, unevaluated = ablation_values(run, head.split, h)
    if not values:
        return _note(f"ablation/ holds no evaluated seed ({head.split} split): run `gogooku ablate`")
    columns = [c for c, *_ in ABLATION_METRICS]
    stats = {key: {a.variant: a for a in ablation_stats(values, key)} for _, _, key, _ in ABLATION_METRICS}
    rows = []
    for variant, seeds in values.items():
        cells = [VARIANTS.get(variant, variant), ", ".join(str(s) for s in seeds)]
        for _, _, key, fmt in ABLATION_METRICS:
            cells.append(fmt(stats[key][variant].mean, stats[key][variant].std))
        rows.append(cells)
    out = [
        f'<p class="caption">h = {h}d, whole {head.split} split of each seed; mean ± std (ddof 1) across '
        "seeds.</p>",
        _table(["variant", "seeds", *columns], rows, 2),
    ]
    if "full" not in values:
        out.append(_note("no full-model seeds in ablation/full: what each part adds is not known"))
    else:
        adds = []
        for variant in values:
            if variant == "full":
                continue
            common = stats[ABLATION_METRICS[0][2]][variant].paired_seeds
            cells = [PARTS.get(variant, f"full - {variant}"), ", ".join(map(str, common)) or DASH]
            for _, _, key, fmt in ABLATION_METRICS:
                cells.append(fmt(stats[key][variant].adds_mean, stats[key][variant].adds_std))
            adds.append(cells)
        if adds:
            out.append(
                '<h3>What each part adds</h3><p class="caption">Full model minus the variant, seed by seed '
                "(paired over the seeds both have); mean ± std across seeds. Positive: the part helps.</p>"
            )
            out.append(_table(["part", "seeds", *columns], adds, 2))
    fig, ax = _figure(1, 1, 7, 2.8)
    ax = ax[0, 0]
    for i, seeds in enumerate(values.values()):
        ics = np.array([v["rank_ic_mean"] for v in seeds.values()], float)
        mean, std, _ = _mean_std(ics)
        ax.bar(i, mean, yerr=std if _finite(std) else None, color=COLORS["atft"], alpha=0.5, capsize=4)
        ax.plot(np.full(ics.shape, i), ics, "o", color="#222", markersize=3)
    ax.set_xticks(range(len(values)), [VARIANTS.get(v, v) for v in values])
    ax.axhline(0, color="#333", linewidth=0.6)
    ax.set_title(f"RankIC at h = {h}d by variant (bars: mean ± std; dots: seeds)")
    out.insert(0, _img(fig, "ablation RankIC by variant"))
    if unevaluated:
        out.append(_note(f"seed folders without an evaluation, left out: {', '.join(unevaluated)}"))
    return "".join(out)


# --- folds and metadata ---


def _folds_section(run: Path, head: Headline, evals: dict[str, Eval]) -> str:
    path = run / "folds.json"
    if not path.is_file():
        return _note("no fold table (folds.json) in this run: run `gogooku train`")
    folds = _read_json(path)
    if not isinstance(folds, list):
        raise GogookuError(f"{path}: expected a list of folds")
    h = head.horizons[0]
    per_fold = {m: ev.fold_values(h, "signal", "rank_ic_mean") for m, ev in evals.items()}

    def segment(rec: dict[str, Any], name: str) -> str:
        seg = rec.get(name) or {}
        if not seg.get("sessions"):
            return DASH
        return f"{seg.get('first')} .. {seg.get('last')} ({seg['sessions']})"

    rows = []
    for i, rec in enumerate(folds):
        cells = [str(rec.get("fold", i)), segment(rec, "train"), segment(rec, "valid"), segment(rec, "test")]
        cells += [fmt_num(v[i], 4) if i < len(v) else DASH for v in per_fold.values()]
        rows.append(cells)
    header = ["fold", "train (sessions)", "valid (sessions)", "test (sessions)"]
    header += [f"{MODELS[m]} RankIC {h}d" for m in per_fold]
    caption = (
        f'<p class="caption">Walk-forward folds; each segment is first .. last date (sessions); the RankIC '
        f"columns are each fold's {head.split} RankIC at h = {h}d.</p>"
    )
    return caption + _table(header, rows, 4)


def _git_commit() -> str:
    """The commit of the code rendering the report; "unknown" outside a git checkout (never fails)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _config_text(run: Path) -> str:
    """config.yaml without its fetch section (download settings: they do not affect a run, and they hold
    the API's URL, which a self-contained page does not carry)."""
    path = run / "config.yaml"
    if not path.is_file():
        return _note("no config.yaml in this run")
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise GogookuError(f"{path}: not readable as YAML ({err})".splitlines()[0]) from None
    if not isinstance(config, dict):
        raise GogookuError(f"{path}: expected a mapping of sections")
    shown = {k: v for k, v in config.items() if k != "fetch"}
    note = " (the fetch section, download settings only, is left out)" if "fetch" in config else ""
    return f"<h3>config.yaml{_e(note)}</h3><pre>{_e(yaml.safe_dump(shown, sort_keys=False))}</pre>"


def _metadata_section(run: Path, head: Headline) -> str:
    inputs = _read_json(run / "inputs.json") if (run / "inputs.json").is_file() else {}
    stages = _read_json(run / "stages.json") if (run / "stages.json").is_file() else {}
    if not isinstance(inputs, dict) or not isinstance(stages, dict):
        raise GogookuError(f"{run}: inputs.json and stages.json must each hold a JSON object")
    n_inputs = inputs.get("n_features", len(inputs.get("inputs", [])) or None)
    devices = sorted(
        {str(s.get("device")) for s in stages.values() if isinstance(s, dict) and s.get("device")}
    )
    rows = [
        ["run folder", str(run.resolve())],
        ["split shown", head.split],
        ["horizons", ", ".join(f"{h}d" for h in head.horizons)],
        ["input hash (inputs.json)", str(inputs.get("input_hash", "unknown"))],
        ["model inputs", str(n_inputs) if n_inputs else "unknown"],
        ["device", ", ".join(devices) or "unknown"],
        ["git commit (of the code rendering this report)", _git_commit()],
        ["report written", dt.datetime.now().astimezone().isoformat(timespec="seconds")],
    ]
    out = [_table(["item", "value"], rows, 2)]
    if stages:
        stage_rows = []
        for name, rec in stages.items():
            rec = rec if isinstance(rec, dict) else {}
            wall = rec.get("wall_s")
            stage_rows.append(
                [
                    name,
                    f"{wall:,.1f} s" if _finite(wall) else DASH,
                    str(rec.get("device", DASH)),
                    str(rec.get("finished", DASH)),
                ]
            )
        out.append(
            "<h3>Stages (stages.json)</h3>" + _table(["stage", "wall time", "device", "finished"], stage_rows)
        )
    else:
        out.append(_note("no stage timings (stages.json) in this run"))
    versions = [[d, _version(d)] for d in VERSIONS]
    out.append("<h3>Package versions (at report time)</h3>" + _table(["package", "version"], versions, 2))
    out.append(_config_text(run))
    return "".join(out)


# --- the page ---

CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:#222;font-size:14px;
 line-height:1.4;max-width:1100px;margin:0 auto;padding:12px 24px}
h1{font-size:22px;margin:6px 0 2px}
h2{font-size:17px;border-bottom:1px solid #ccc;padding-bottom:2px;margin:26px 0 8px}
h3{font-size:14px;margin:14px 0 4px}
.sub{color:#666;margin:0 0 6px;font-size:13px}
.summary{margin:6px 0 8px}
.caption{color:#555;font-size:12px;margin:4px 0}
.note{color:#8a5a00;margin:4px 0}
nav{font-size:12px;margin:0 0 6px}
nav a{margin-right:10px;color:#1f5fa8;text-decoration:none}
table{border-collapse:collapse;font-size:13px;margin:4px 0}
th,td{padding:1px 9px;border-bottom:1px solid #e6e6e6;text-align:right;white-space:nowrap}
th{background:#f3f3f3;font-weight:600}
th.l,td.l{text-align:left}
tr.first td{border-top:2px solid #bbb}
tr.atft td{font-weight:600;background:#f2f6fb}
img{max-width:100%;display:block;margin:6px 0}
pre{background:#f7f7f7;padding:8px;font-size:12px;overflow:auto}
"""

SECTIONS = {  # id -> heading, in page order
    "headline": "Headline: the model against its baselines",
    "daily_rank_ic": "Daily RankIC and its cumulative sum",
    "cumulative_returns": "Portfolios: cumulative long-short and top-K returns",
    "deciles": "Mean return by prediction decile",
    "learning_curves": "Learning curves per fold",
    "grad_norms": "Per-module gradient norms",
    "vsn_weights": "Variable selection: the VSN's mean weights",
    "lgbm_importance": "LightGBM gain importance",
    "ablations": "Ablations: what each part adds",
    "folds": "Fold table",
    "metadata": "Run metadata",
}


def _page(run: Path, head: Headline, summary: str, bodies: dict[str, str]) -> str:
    nav = "".join(f'<a href="#{sid}">{_e(title.split(":")[0])}</a>' for sid, title in SECTIONS.items())
    sections = "".join(
        f'<section id="{sid}"><h2>{_e(SECTIONS[sid])}</h2>{body}</section>' for sid, body in bodies.items()
    )
    sub = (
        f"run {_e(run.resolve().name)} · {head.split} split · horizons "
        f"{', '.join(f'{h}d' for h in head.horizons)} · how to read each section: docs/report.md"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>gogooku report: {_e(run.resolve().name)}</title><style>{CSS}</style></head><body>"
        f'<h1>gogooku report: {_e(run.resolve().name)}</h1><p class="sub">{sub}</p>'
        f'<p class="summary">{_e(summary)}</p><nav>{nav}</nav>{sections}</body></html>\n'
    )


def render_report(
    run_dir: str | Path, out: str | Path | None = None, progress: Callable[[str], None] | None = None
) -> Path:
    """Write the run's self-contained HTML report (default RUN/report.html) and return its path."""
    run = _check_run_dir(run_dir)
    target = Path(out) if out is not None else run / "report.html"
    if target.is_dir():
        raise GogookuError(f"{target} is a folder: --out takes the HTML file to write")
    if target.suffix.lower() not in (".html", ".htm"):
        raise GogookuError(f"--out {target}: expected an .html file name (the report is one HTML page)")
    if not target.parent.is_dir():
        raise GogookuError(f"{target.parent}: no such folder for the report")
    step = progress or (lambda _: None)
    step("reading the run")
    head = headline(run)
    evals = _evals(run, head.split)
    dailies = {m: df for m, df in ((m, _read_daily(ev)) for m, ev in evals.items()) if df is not None}
    logs = _read_logs(run)

    import matplotlib

    plots: dict[str, Callable[[], str]] = {
        "headline": lambda: _headline_section(head),
        "daily_rank_ic": lambda: _daily_rank_ic_section(head, dailies),
        "cumulative_returns": lambda: _cumulative_returns_section(head, evals, dailies),
        "deciles": lambda: _deciles_section(head, evals),
        "learning_curves": lambda: _learning_curves_section(logs),
        "grad_norms": lambda: _grad_norms_section(logs),
        "vsn_weights": lambda: _vsn_section(head, evals),
        "lgbm_importance": lambda: _lgbm_section(run, head.split),
        "ablations": lambda: _ablations_section(run, head),
        "folds": lambda: _folds_section(run, head, evals),
        "metadata": lambda: _metadata_section(run, head),
    }
    bodies = {}
    with matplotlib.rc_context(PLOT_STYLE):
        for sid, make in plots.items():
            step(SECTIONS[sid].split(":")[0].lower())
            bodies[sid] = make()
    write_atomic(target, _page(run, head, _summary(head, evals, dailies), bodies))
    return target
