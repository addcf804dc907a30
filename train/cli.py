"""The `gogooku` command line. Each pipeline stage is one subcommand; heavy imports happen inside commands.

A `GogookuError` (bad input, config or environment) is printed as one line and exits with status 2.
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
console = Console(stderr=True)


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
            console.print(f"[bold red]error:[/] {err}", highlight=False)
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
def info() -> None:
    """Show package versions, the machine, JAX devices and whether GPU packages are usable (and why not)."""
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
        "cupy (GPU arrays)": backend.cupy_problem,
        "cudf-polars (GPU ingest)": backend.cudf_polars_problem,
        "cugraph (GPU graphs)": backend.cugraph_problem,
        "jax GPU (model)": backend.jax_gpu_problem,
    }
    for name, check in checks.items():
        problem = check()
        table.add_row(name, "[green]usable[/]" if problem is None else f"[yellow]no[/]: {problem}")
    out.print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
