"""The run config: one YAML file (`configs/demo.yaml`) with a section per pipeline stage.

Each stage's section is a dataclass here; `load_config(path, ["train.lr=3e-4"])` checks every key and value.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from etl.config import ConfigError, load_dataclass


def _check_date(key: str, value: str) -> None:
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"config key '{key}' = {value!r}: expected a date YYYY-MM-DD") from None


@dataclass(frozen=True)
class PathsConfig:
    """Where each stage reads and writes (relative to the working directory)."""

    raw: str = "data/raw"
    features: str = "data/features"
    runs: str = "runs"


@dataclass(frozen=True)
class SynthConfig:
    """The built-in synthetic market (see `gogooku synth --help`)."""

    stocks: int = 300
    start: str = "2019-01-01"
    end: str = "2023-12-31"
    seed: int = 0
    # planted signals: basis points of next-day expected return per unit of score (docs/synthetic.md)
    reversal_bp: float = 12.0
    sector_momentum_bp: float = 4.0
    lead_lag_bp: float = 12.0
    pead_bp: float = 10.0
    flow_bp: float = 4.0
    squeeze_bp: float = 10.0
    idio_dof: float = 4.0  # Student-t degrees of freedom of idiosyncratic noise
    halt_rate: float = 0.002  # base probability of a no-trade session (x5 for small caps)

    def validate(self) -> None:
        if self.stocks < 10:
            raise ConfigError(f"config key 'synth.stocks' = {self.stocks}: expected at least 10")
        if self.idio_dof <= 2.0:
            raise ConfigError(
                f"config key 'synth.idio_dof' = {self.idio_dof}: expected > 2 (finite variance)"
            )
        if not 0.0 <= self.halt_rate < 0.1:
            raise ConfigError(
                f"config key 'synth.halt_rate' = {self.halt_rate}: expected 0 <= halt_rate < 0.1"
            )
        _check_date("synth.start", self.start)
        _check_date("synth.end", self.end)
        if self.start >= self.end:
            raise ConfigError(f"synth.start ({self.start}) must be before synth.end ({self.end})")


@dataclass(frozen=True)
class GraphConfig:
    """Daily correlation graph parameters (FEATURES.md §1.12)."""

    window: int = 60
    min_obs: int = 40
    threshold: float = 0.3
    k: int = 4

    def validate(self) -> None:
        if not 2 <= self.min_obs <= self.window:
            raise ConfigError(
                f"graph.min_obs = {self.min_obs}: expected 2 <= min_obs <= window ({self.window})"
            )
        if not 0.0 <= self.threshold < 1.0:
            raise ConfigError(f"graph.threshold = {self.threshold}: expected 0 <= threshold < 1")
        if self.k < 1:
            raise ConfigError(f"graph.k = {self.k}: expected k >= 1")


@dataclass(frozen=True)
class FetchConfig:
    """The J-Quants v2 client (`gogooku fetch`): key here or in JQUANTS_API_KEY - docs/fetch.md."""

    plan: Literal["free", "light", "standard", "premium"] = "light"
    requests_per_minute: int | None = None  # None: the plan's limit (5, 60, 120, 500)
    rate_period_s: float = 60.0  # the limiter's window; J-Quants counts per minute
    api_key: str | None = None
    base_url: str = "https://api.jquants.com/v2"
    timeout_s: float = 30.0
    max_attempts: int = 10
    backoff_s: float = 1.0
    max_pages: int = 1000
    statements_lookback_days: int = 365  # statements from a year before --start, as `gogooku synth` writes

    def validate(self) -> None:
        if self.statements_lookback_days < 0:
            raise ConfigError(
                f"fetch.statements_lookback_days = {self.statements_lookback_days}: expected >= 0"
            )
        if self.requests_per_minute is not None and self.requests_per_minute < 1:
            raise ConfigError(f"fetch.requests_per_minute = {self.requests_per_minute}: expected at least 1")
        for key in ("rate_period_s", "timeout_s", "backoff_s"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"fetch.{key} = {getattr(self, key)}: expected a positive number")
        if self.max_attempts < 1 or self.max_pages < 1:
            raise ConfigError("fetch.max_attempts and fetch.max_pages must be at least 1")
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"fetch.base_url = {self.base_url!r}: expected an http(s) URL")


@dataclass(frozen=True)
class Config:
    """The whole run: device, paths and one section per stage."""

    device: Literal["auto", "cpu", "gpu"] = "auto"
    paths: PathsConfig = field(default_factory=PathsConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    fetch: FetchConfig = field(default_factory=FetchConfig)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a run config from YAML plus `section.key=value` overrides."""
    return load_dataclass(Config, path, overrides)
