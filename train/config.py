"""The run config: one YAML file (`configs/demo.yaml`) with a section per pipeline stage.

The ETL's sections (synth, graph, fetch) live in `etl.config`; this module composes them with the run's own;
`load_config(path, ["train.lr=3e-4"])` checks every key and value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from etl.config import ConfigError, FetchConfig, GraphConfig, SynthConfig, load_dataclass


@dataclass(frozen=True)
class PathsConfig:
    """Where each stage reads and writes (relative to the working directory)."""

    raw: str = "data/raw"
    features: str = "data/features"
    runs: str = "runs"


SESSIONS_PER_YEAR = 245  # Tokyo Stock Exchange sessions in a year: the annualisation factor of every ratio


@dataclass(frozen=True)
class MetricsConfig:
    """How the scorer (train/metrics.py) trades and bins: the run config's `eval:` section, docs/metrics.md.

    It lives here, not beside the scorer, so that loading a config does not import JAX.
    """

    lag: int = 1  # sessions between the close a signal is formed at and the close it trades at
    cost_bp: float = 10.0  # cost per side, in basis points of the value traded
    top_k: int = 50  # names held by the long-only portfolio
    n_drop: int = 5  # most holdings it replaces per day (Qlib's TopkDropout)
    quantiles: int = 10  # bins of the decile mean returns and the top-minus-bottom spread
    long_short_quantiles: int = 5  # the long-short portfolio buys the top and sells the bottom bin
    jpx_size: int = 200  # names in each JPX basket (fewer for small universes: N // 2)
    jpx_top_weight: float = 2.0  # weight of the best-ranked name of a JPX basket; the last one weighs 1
    min_stocks: int = 10  # fewer valid stocks on a date: NaN that day, no trade

    def validate(self) -> None:
        if self.lag < 0:
            raise ConfigError(f"eval.lag = {self.lag}: expected >= 0 sessions")
        if self.cost_bp < 0:
            raise ConfigError(f"eval.cost_bp = {self.cost_bp}: expected >= 0")
        if self.top_k < 1 or not 0 <= self.n_drop <= self.top_k:
            raise ConfigError(
                f"eval.top_k = {self.top_k}, eval.n_drop = {self.n_drop}: expected top_k >= 1 and "
                "0 <= n_drop <= top_k"
            )
        for key in ("quantiles", "long_short_quantiles"):
            if getattr(self, key) < 2:
                raise ConfigError(f"eval.{key} = {getattr(self, key)}: expected at least 2 bins")
        if self.jpx_size < 1 or self.jpx_top_weight < 1.0:
            raise ConfigError(
                f"eval.jpx_size = {self.jpx_size}, eval.jpx_top_weight = {self.jpx_top_weight}: "
                "expected jpx_size >= 1 and jpx_top_weight >= 1"
            )
        if self.min_stocks < 2:
            raise ConfigError(f"eval.min_stocks = {self.min_stocks}: expected at least 2")


@dataclass(frozen=True)
class Config:
    """The whole run: device, paths and one section per stage."""

    device: Literal["auto", "cpu", "gpu"] = "auto"
    paths: PathsConfig = field(default_factory=PathsConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    fetch: FetchConfig = field(default_factory=FetchConfig)
    eval: MetricsConfig = field(default_factory=MetricsConfig)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a run config from YAML plus `section.key=value` overrides."""
    return load_dataclass(Config, path, overrides)
