"""`gogooku ablate`: what each part of ATFT-GAT-FAN adds, measured over several seeds (docs/train.md).

Each variant is the run config with a few overrides; each (variant, seed) is a whole run folder
RUN_DIR/ablation/<variant>/seed_<s>/ (RUN_DIR = paths.runs/train.name, the folder `gogooku train` writes)
trained by `run_training` and evaluated on the test split by `evaluate_run`. A pair whose evaluation exists
is skipped, one with a partial training is resumed, so an interrupted ablation continues where it stopped.
The table is `train.report.ablation_stats`, the same aggregation the report shows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import jax
from rich.console import Console

from etl.errors import GogookuError
from train.config import Config, load_config
from train.report import AblationStat, ablation_stats, ablation_values

VARIANT_OVERRIDES = {  # what each variant changes in the run config
    "full": (),
    "no_gat": ("model.gat_layers=0",),  # no graph attention: each stock sees only its own history
    "no_fan": ("model.fan=false",),  # the scaled window without FAN's residual and trend beside it
    "no_highway": ("model.highway=false",),  # no linear maps of latest inputs to the heads
    "shuffled_graph": ("data.graph=shuffled",),  # each date's edges between random stocks, degrees kept
}
SPLIT = "test"
KEY = "rank_ic_mean"  # the table's metric: the whole test split's mean daily RankIC


@dataclass(frozen=True)
class Ablation:
    """What `run_ablation` did: the run folder, the table's horizon and rows, the pairs run and skipped."""

    run_dir: Path
    horizon: int
    stats: list[AblationStat]
    trained: list[tuple[str, int]]
    skipped: list[tuple[str, int]]


def parse_variants(text: str) -> list[str]:
    """A comma-separated variant list, checked against VARIANT_OVERRIDES; order kept, repeats dropped."""
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANT_OVERRIDES]
    if unknown or not names:
        raise GogookuError(
            f"--variants {text!r}: unknown {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(VARIANT_OVERRIDES)}"
        )
    return list(dict.fromkeys(names))


def seed_dir(run_dir: Path, variant: str, seed: int) -> Path:
    return run_dir / "ablation" / variant / f"seed_{seed}"


def variant_config(config: str | Path | None, overrides: list[str], variant: str, seed: int) -> Config:
    """The run config of one (variant, seed): the user's overrides, the variant's, then seed and folder."""
    base = load_config(config, overrides)
    folder = seed_dir(Path(base.paths.runs) / base.train.name, variant, seed)
    return load_config(
        config,
        [
            *overrides,
            *VARIANT_OVERRIDES[variant],
            f"train.seed={seed}",
            f"paths.runs={folder.parent}",
            f"train.name={folder.name}",
        ],
    )


def _evaluated(folder: Path) -> bool:
    return (folder / "eval" / SPLIT / "atft" / "metrics.json").is_file()


def run_ablation(
    config: str | Path | None,
    overrides: list[str] | None = None,
    *,
    seeds: int = 3,
    variants: list[str] | None = None,
    console: Console | None = None,
) -> Ablation:
    """Train and evaluate every (variant, seed) not yet evaluated; return the table over all that are."""
    from train.evaluate import evaluate_run
    from train.loop import run_training

    console = console or Console(stderr=True)
    overrides = list(overrides or [])
    variants = variants or list(VARIANT_OVERRIDES)
    if seeds < 1:
        raise GogookuError(f"--seeds {seeds}: expected at least 1")
    base = load_config(config, overrides)
    run_dir = Path(base.paths.runs) / base.train.name
    horizon = base.model.horizons[0]
    if (
        not jax.config.jax_compilation_cache_dir
    ):  # one cache for every variant, where `gogooku train` keeps it
        jax.config.update("jax_compilation_cache_dir", str(Path(base.paths.runs).absolute() / ".jax_cache"))
    pairs = [(v, s) for s in range(seeds) for v in variants]  # seed by seed: a cut-short run still compares
    trained, skipped = [], []
    for k, (variant, seed) in enumerate(pairs, 1):
        folder = seed_dir(run_dir, variant, seed)
        tag = f"ablate [{k}/{len(pairs)}] {variant} seed {seed}"
        if _evaluated(folder):
            console.print(f"{tag}: evaluated already ({folder}), skipped", highlight=False)
            skipped.append((variant, seed))
            continue
        resume = folder if (folder / "config.yaml").is_file() else None
        console.print(f"{tag}: {'resumed' if resume else 'started'} -> {folder}", highlight=False)
        started = time.perf_counter()
        run_training(variant_config(config, overrides, variant, seed), resume=resume, console=console)
        evaluate_run(folder, SPLIT, console=console)
        ic = ablation_values(run_dir, SPLIT, horizon)[0][variant][seed][KEY]
        console.print(
            f"{tag}: finished in {time.perf_counter() - started:.0f}s; test RankIC h={horizon} {ic:+.4f}",
            highlight=False,
        )
        trained.append((variant, seed))
    values = ablation_values(run_dir, SPLIT, horizon)[0]  # every evaluated variant, as the report shows them
    return Ablation(run_dir, horizon, ablation_stats(values, KEY), trained, skipped)
