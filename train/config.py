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

    def validate(self) -> None:
        if self.stocks < 10:
            raise ConfigError(f"config key 'synth.stocks' = {self.stocks}: expected at least 10")
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
class Config:
    """The whole run: device, paths and one section per stage."""

    device: Literal["auto", "cpu", "gpu"] = "auto"
    paths: PathsConfig = field(default_factory=PathsConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a run config from YAML plus `section.key=value` overrides."""
    return load_dataclass(Config, path, overrides)
