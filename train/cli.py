"""The `gogooku` command line. Each pipeline stage is one subcommand; heavy imports happen inside commands.

A `GogookuError` (bad input, config or environment) is printed as one line and exits with status 2. Text
that comes from the user or the machine (paths, messages, package hints such as `.[gpu]`) is printed with
Rich markup escaped; lines are not wrapped where stderr is not a terminal, and long stages print a progress
line every 30 s there (`etl.heartbeat`).
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from etl.errors import GogookuError

app = typer.Typer(
    name="gogooku",
    help="Predict Japanese equity returns: synthetic or J-Quants data -> 395-column dataset -> daily "
    "correlation graphs -> ATFT-GAT-FAN (JAX/Flax) -> walk-forward evaluation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True, soft_wrap=True)


def table_console() -> Console:
    """Stdout for tables: off a terminal (a log file, a pipe) 120 columns wide, so no cell is cut short."""
    out = Console()
    return out if out.is_terminal else Console(width=max(out.width, 120))


@app.callback()
def _group() -> None:
    """Run `gogooku COMMAND --help` for the options of each stage."""


ConfigOption = Annotated[
    str | None, typer.Option("--config", "-c", help="YAML run config, e.g. configs/demo.yaml.")
]
OverridesArg = Annotated[
    list[str] | None, typer.Argument(help="Config overrides as section.key=value, e.g. train.lr=3e-4.")
]


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a GogookuError into one red line and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except GogookuError as err:
            console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False)
            raise typer.Exit(2) from None

    return wrapper


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _memory_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


@app.command()
@user_errors
def info(
    model_config: Annotated[
        str | None,
        typer.Option(
            "--model", help="Model config (tiny, base or a YAML path): show its parameter count and layout."
        ),
    ] = None,
) -> None:
    """Show package versions, the machine, JAX devices and whether GPU packages are usable (and why not)."""
    if model_config is not None:
        from model.summary import model_summary_table

        Console().print(model_summary_table(model_config))
        return
    from etl import backend

    out = Console()
    table = Table(title="gogooku environment", show_header=True)
    table.add_column("item")
    table.add_column("value")
    table.add_row("python", f"{platform.python_version()} ({sys.executable})")
    table.add_row("machine", f"{platform.machine()}, {os.cpu_count()} CPUs, {_memory_gib():.1f} GiB memory")
    for dist in (
        "gogooku",
        "numpy",
        "polars",
        "pyarrow",
        "jax",
        "jaxlib",
        "flax",
        "optax",
        "orbax-checkpoint",
        "lightgbm",
        "exchange_calendars",
    ):
        table.add_row(dist, _version(dist))
    import jax

    table.add_row("jax devices", ", ".join(str(d) for d in jax.devices()))
    checks = {
        "cupy (GPU arrays, graphs)": backend.cupy_problem,
        "cudf-polars (GPU ingest)": backend.cudf_polars_problem,
        "jax GPU (model)": backend.jax_gpu_problem,
    }
    for name, check in checks.items():
        problem = check()
        table.add_row(name, "[green]usable[/]" if problem is None else f"[yellow]no[/]: {escape(problem)}")
    out.print(table)


@app.command()
@user_errors
def fetch(
    start: Annotated[str, typer.Option(help="First date, YYYY-MM-DD.")],
    end: Annotated[str, typer.Option(help="Last date, YYYY-MM-DD (clipped to yesterday in Tokyo).")],
    endpoints: Annotated[
        list[str] | None,
        typer.Option("--endpoints", "-e", help="Endpoints, comma-separated or repeated (default: all)."),
    ] = None,
    out: Annotated[str | None, typer.Option(help="Raw store folder (default: paths.raw).")] = None,
    config: ConfigOption = None,
    overrides: OverridesArg = None,
) -> None:
    """Fetch J-Quants v2 data into the raw store; a re-run fetches only what is missing (docs/fetch.md)."""
    from etl.sources.jquants import run_cli_fetch
    from train.config import load_config

    cfg = load_config(config, overrides)
    run_cli_fetch(cfg.fetch, start, end, endpoints, out or cfg.paths.raw)


@app.command()
@user_errors
def etl(
    raw: Annotated[str | None, typer.Option(help="Raw store folder (default: paths.raw).")] = None,
    out: Annotated[str | None, typer.Option(help="Feature store folder (default: paths.features).")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or gpu (default: config device).")] = None,
    start: Annotated[str | None, typer.Option(help="First dataset date, YYYY-MM-DD (default: all).")] = None,
    end: Annotated[str | None, typer.Option(help="Last dataset date, YYYY-MM-DD (default: all).")] = None,
    chunk: Annotated[
        int | None,
        typer.Option(help="Stocks per chunk, memory vs speed (default: 64 on a CPU, 1,024 on a GPU)."),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Chunk threads (default: 2 with two or more CPU cores, on a CPU or a GPU); each holds a "
            "chunk's columns, so more threads need more memory."
        ),
    ] = None,
    config: ConfigOption = None,
    overrides: OverridesArg = None,
) -> None:
    """Build the feature store (the 395 columns of docs/features.md: Parquet by year, catalog.json and the
    daily graphs) from the raw store (docs/etl.md)."""
    from pathlib import Path

    from rich.progress import Progress

    from etl.heartbeat import Heartbeat
    from etl.pipeline import build_store
    from train.config import load_config

    cfg = load_config(config, overrides)
    with Progress(console=console, transient=True, disable=not console.is_terminal) as bar, Heartbeat(bar):
        task = bar.add_task("etl: stock chunks", total=None)
        result = build_store(
            raw or cfg.paths.raw,
            out or cfg.paths.features,
            device=device or cfg.device,
            start=start,
            end=end,
            chunk_size=chunk,
            workers=workers,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            notify=lambda msg: console.print(f"[yellow]warning:[/] {escape(msg)}", highlight=False),
            graph=cfg.graph,
        )
    if result.missing:
        console.print(
            f"[yellow]warning:[/] raw store lacks {escape(', '.join(result.missing))}: their columns are NaN "
            "with validity 0",
            highlight=False,
        )
    target = Path(out or cfg.paths.features)
    parts = sorted(target.glob("year=*/part-*.parquet"))
    g, n_features = result.graph or {}, len(result.columns)
    console.print(
        f"etl: {result.rows:,} rows x {n_features + 2} columns (Code, Date and {n_features} "
        f"features; {result.stocks} stocks, {result.sessions} sessions) in {result.seconds:.1f}s -> "
        f"{target}: {len(parts)} Parquet files in {len({p.parent.name for p in parts})} year folders, "
        f"catalog.json, graph_edges.npz ({g.get('edges', 0):,} edges, Epad {g.get('epad')})",
        markup=False,
        highlight=False,
    )


@app.command()
@user_errors
def synth(
    stocks: Annotated[int | None, typer.Option(help="Number of codes (default: synth.stocks).")] = None,
    start: Annotated[str | None, typer.Option(help="First date, YYYY-MM-DD (default: synth.start).")] = None,
    end: Annotated[str | None, typer.Option(help="Last date, YYYY-MM-DD (default: synth.end).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default: synth.seed).")] = None,
    out: Annotated[str | None, typer.Option(help="Raw store folder (default: paths.raw).")] = None,
    config: ConfigOption = None,
    overrides: OverridesArg = None,
) -> None:
    """Generate the synthetic Japanese market as a raw store plus oracle.parquet (docs/synthetic.md)."""
    from rich.progress import Progress

    from etl.heartbeat import Heartbeat
    from etl.sources.synthetic import STEPS, generate
    from train.config import load_config

    extra = [
        f"synth.{k}={v}" for k, v in (("stocks", stocks), ("start", start), ("end", end), ("seed", seed))
    ]
    cfg = load_config(config, [*(overrides or []), *(e for e in extra if not e.endswith("=None"))])
    target = out or cfg.paths.raw
    with Progress(console=console, transient=True, disable=not console.is_terminal) as bar, Heartbeat(bar):
        task = bar.add_task("synth", total=STEPS)
        generate(
            cfg.synth, target, progress=lambda step: bar.update(task, advance=1, description=f"synth: {step}")
        )
    s = cfg.synth
    console.print(
        f"synthetic market: {s.stocks} codes, {s.start}..{s.end}, seed {s.seed} -> {target}",
        markup=False,
        highlight=False,
    )


@app.command()
@user_errors
def report(
    run: Annotated[str, typer.Option("--run", help="Run folder, e.g. runs/demo (gogooku train writes it).")],
    out: Annotated[str | None, typer.Option(help="HTML file to write (default: RUN/report.html).")] = None,
) -> None:
    """Write one self-contained HTML report of a run (plots embedded, opens offline; docs/report.md)."""
    from rich import box

    from train.report import HEADLINE_COLUMNS, headline, headline_cells, render_report

    with console.status("report: reading the run") as status:
        path = render_report(run, out, progress=lambda what: status.update(f"report: {what}"))
    head = headline(run)
    table = Table(
        title=f"headline ({head.split} split)",
        caption=head.caption,
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for i, column in enumerate(HEADLINE_COLUMNS):
        table.add_column(column, justify="left" if i < 2 else "right", no_wrap=True)
    for i, row in enumerate(head.rows):
        last_of_horizon = i + 1 == len(head.rows) or head.rows[i + 1].horizon != row.horizon
        table.add_row(*headline_cells(row), end_section=last_of_horizon)
    stdout = Console()
    stdout.print(table)
    stdout.print(f"report: {path}", highlight=False, soft_wrap=True)


# --- training: `gogooku folds`, `gogooku train` (train/splits.py, train/loop.py; docs/train.md) ---


@app.command()
@user_errors
def folds(config: ConfigOption = None, overrides: OverridesArg = None) -> None:
    """Print the walk-forward folds of the feature store: each segment's dates and session counts."""
    from train.config import load_config
    from train.data import store_dates
    from train.splits import fold_records, make_folds

    cfg = load_config(config, overrides)
    dates = store_dates(cfg.paths.features)
    folds_ = make_folds(
        len(dates), cfg.train.folds, max_horizon=max(cfg.model.horizons), first=cfg.model.lookback - 1
    )
    f = cfg.train.folds
    table = Table(
        title=f"{len(folds_)} walk-forward folds over {len(dates)} sessions ({dates[0]}..{dates[-1]}): "
        f"{f.mode} training, embargo {f.embargo}, labels up to {max(cfg.model.horizons)} sessions ahead"
    )
    table.add_column("fold", justify="right")
    for name in ("train", "valid", "test"):
        table.add_column(f"{name} dates")
        table.add_column(name, justify="right")
    for rec in fold_records(folds_, dates):
        cells = [str(rec["fold"])]
        for name in ("train", "valid", "test"):
            seg = rec[name]
            cells += [f"{seg['first']}..{seg['last']}", str(seg["sessions"])]
        table.add_row(*cells)
    table_console().print(table)


@app.command()
@user_errors
def train(
    resume: Annotated[
        str | None, typer.Option(help="Continue the run in this folder (its config.yaml unless --config).")
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", help="Stop each fold after this many steps (quick checks).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run of the same train.name.")] = False,
    device: Annotated[str | None, typer.Option(help="auto, cpu or gpu (default: config device).")] = None,
    config: ConfigOption = None,
    overrides: OverridesArg = None,
) -> None:
    """Train ATFT-GAT-FAN walk-forward on the feature store into paths.runs/train.name (docs/train.md)."""
    from train.config import load_config
    from train.loop import resume_folder, run_training

    extra = [f"train.max_steps={max_steps}"] if max_steps is not None else []
    extra += [f"device={device}"] if device is not None else []
    if config is None and resume is not None:
        config = str(resume_folder(resume) / "config.yaml")
    cfg = load_config(config, [*(overrides or []), *extra])
    result = run_training(cfg, resume=resume, overwrite=overwrite, console=console)
    h1 = next(k for k in result if k.startswith("mean_best_valid_rank_ic_h"))
    ic, ic_h1 = result["mean_best_valid_rank_ic"], result[h1]
    console.print(
        f"train: {len(result['folds'])} folds in {result['seconds']:.0f}s -> {result['run_dir']}; mean best "
        f"validation RankIC {ic:+.4f} (h={h1.rsplit('h', 1)[1]}: {ic_h1:+.4f})",
        highlight=False,
    )


# --- evaluation: `gogooku evaluate`, `gogooku baseline`, `gogooku predict` (train/evaluate.py,
# train/baseline.py, train/predict.py; docs/evaluate.md) ---

RunOption = Annotated[
    str, typer.Option("--run", help="Run folder, e.g. runs/demo (gogooku train writes it).")
]
SplitOption = Annotated[str, typer.Option(help="Which segment of each fold to score: test or valid.")]


def _print_rank_ic(results: dict[str, dict[str, Any]], split: str) -> None:
    """One line per model: its RankIC on the split at every horizon (metrics.json's overall mean)."""
    out = Console(soft_wrap=True)
    for model, metrics in results.items():
        cells = []
        for h in metrics["horizons"]:
            value = metrics["overall"]["horizons"][f"{h}d"]["signal"]["rank_ic_mean"]
            cells.append(f"{h}d {value:+.4f}" if value is not None else f"{h}d -")
        out.print(f"{split} RankIC {model:12s} " + "  ".join(cells), highlight=False)


@app.command()
@user_errors
def evaluate(run: RunOption, split: SplitOption = "test", overrides: OverridesArg = None) -> None:
    """Score a run on its folds' test (or validation) dates: the model from each fold's best checkpoint,
    the synthetic oracle (where the raw store has one) and the 5-day reversal, each into
    RUN/eval/SPLIT/MODEL/ (docs/evaluate.md). Overrides: eval.key=value only."""
    from train.evaluate import evaluate_run

    results = evaluate_run(run, split, overrides=overrides, console=console)
    _print_rank_ic(results, split)
    console.print(f"evaluate: {', '.join(results)} -> {escape(str(run))}/eval/{split}/", highlight=False)


@app.command()
@user_errors
def baseline(
    split: SplitOption = "test", config: ConfigOption = None, overrides: OverridesArg = None
) -> None:
    """Train LightGBM on the config's folds (one model per fold and horizon, the model's inputs at date t
    and its rank labels, early stopping on validation dates only) and score it into
    paths.runs/train.name/eval/SPLIT/lightgbm/ (docs/evaluate.md)."""
    from train.baseline import run_baseline
    from train.config import load_config

    metrics = run_baseline(load_config(config, overrides), split, console=console)
    _print_rank_ic({"lightgbm": metrics}, split)


@app.command()
@user_errors
def predict(
    run: RunOption,
    date: Annotated[
        str | None, typer.Option(help="Session to rank, YYYY-MM-DD (default: the feature store's last).")
    ] = None,
    out: Annotated[
        str | None,
        typer.Option(help="Output file, .csv or .parquet by suffix (default: RUN/ranking_DATE.csv)."),
    ] = None,
) -> None:
    """Rank the stocks to trade on in the session after DATE with the run's most recent model: the LAST
    fold's best checkpoint. Per horizon: the median prediction as the score, the other quantiles and the
    rank, with company name and sector (docs/evaluate.md)."""
    from pathlib import Path

    from train.predict import check_out, ranking, write_ranking

    if out is not None:
        check_out(out)
    frame = ranking(run, date, console=console)
    day = frame["Date"][0]
    path = write_ranking(frame, out or Path(run) / f"ranking_{day}.csv")
    score = next(c for c in frame.columns if c.startswith("score_"))
    table = Table(title=f"top 10 of {frame.height} on {day} by {score}")
    for column in ("Code", "CompanyName", "Sector33CodeName", score):
        table.add_column(column, justify="right" if column == score else "left")
    for row in frame.head(10).iter_rows(named=True):
        name, sector = row["CompanyName"] or "", row["Sector33CodeName"] or ""
        table.add_row(row["Code"], escape(name), escape(sector), f"{row[score]:+.5f}")
    Console(soft_wrap=True).print(table)
    console.print(f"predict: {frame.height} stocks -> {escape(str(path))}", highlight=False)


# --- ablations: `gogooku ablate` (train/ablate.py; docs/train.md) ---


@app.command()
@user_errors
def ablate(
    seeds: Annotated[int, typer.Option(help="Seeds per variant: 0..n-1 (train.seed).")] = 3,
    variants: Annotated[
        str, typer.Option(help="Comma-separated: full, no_gat, no_fan, no_highway, shuffled_graph.")
    ] = "full,no_gat,no_fan,no_highway,shuffled_graph",
    config: ConfigOption = None,
    overrides: OverridesArg = None,
) -> None:
    """Train and test-evaluate each variant x seed into RUN/ablation/<variant>/seed_<s>/, then print what each
    part adds (test RankIC at the first horizon, mean ± std over seeds). A pair already evaluated is skipped
    and a partly trained one resumed, so rerunning the same command continues an interrupted ablation."""
    from rich import box

    from train.ablate import parse_variants, run_ablation
    from train.report import PARTS, VARIANTS, fmt_pm

    result = run_ablation(config, overrides, seeds=seeds, variants=parse_variants(variants), console=console)
    h = result.horizon
    table = Table(
        title=f"ablation: test RankIC h={h} ({result.run_dir / 'ablation'})",
        caption="mean ± std (ddof 1) over seeds; 'adds': full minus the variant, paired by seed "
        "(positive: the part helps)",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for i, column in enumerate(("variant", "seeds", f"RankIC h={h}", "adds (full - variant)", "part")):
        table.add_column(column, justify="left" if i in (0, 1, 4) else "right", no_wrap=True)
    for row in result.stats:
        adds = "" if row.variant == "full" else fmt_pm(row.adds_mean, row.adds_std, 4)
        table.add_row(
            VARIANTS.get(row.variant, row.variant),
            ",".join(map(str, row.seeds)),
            fmt_pm(row.mean, row.std, 4),
            adds,
            PARTS.get(row.variant, ""),
        )
    table_console().print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
