"""The run config: one YAML file (`configs/demo.yaml`) with a section per pipeline stage.

The ETL's sections (synth, graph, fetch) live in `etl.config`; this module composes them with the run's own;
`load_config(path, ["train.lr=3e-4"])` checks every key and value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from etl.config import FetchConfig, GraphConfig, SynthConfig, load_dataclass


@dataclass(frozen=True)
class PathsConfig:
    """Where each stage reads and writes (relative to the working directory)."""

    raw: str = "data/raw"
    features: str = "data/features"
    runs: str = "runs"


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
