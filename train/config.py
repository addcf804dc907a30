"""The run config: one YAML file (`configs/demo.yaml`) with a section per pipeline stage.

The ETL's sections (synth, graph, fetch) live in `etl.config`; this module composes them with the run's own
(data, model, train); `load_config(path, ["train.lr=3e-4"])` checks every key and value.

The `model:` section names a model config (`config: tiny | base | a YAML path`, see configs/model/) and may
override any of its keys (`model.hidden=32`); its `n_features` is set by the run from the chosen inputs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from etl.config import (
    ConfigError,
    FetchConfig,
    GraphConfig,
    SynthConfig,
    apply_overrides,
    build_dataclass,
    read_yaml,
)
from model.config import ModelConfig, resolve_model_config_path


@dataclass(frozen=True)
class PathsConfig:
    """Where each stage reads and writes (relative to the working directory)."""

    raw: str = "data/raw"
    features: str = "data/features"
    runs: str = "runs"


@dataclass(frozen=True)
class DataConfig:
    """What the model sees: its inputs and each date's universe (both recorded in a run's inputs.json)."""

    inputs: str | tuple[str, ...] = "all"  # "all": every role-I column of the catalog; or a list of them
    exclude_sector9999: bool = True  # ETFs and other sector-9999 issues leave the universe
    min_turnover_20d: float = 0.0  # yen: mean TurnoverValue over the last 20 sessions (0: no floor)
    clip: float = 5.0  # robust z-scores are clipped to +-clip
    pad_multiple: int = 0  # Npad rounds up to this; 0: 128 on a GPU, 8 on a CPU

    def validate(self) -> None:
        if isinstance(self.inputs, str) and self.inputs != "all":
            raise ConfigError(f"data.inputs = {self.inputs!r}: expected 'all' or a list of column names")
        if isinstance(self.inputs, tuple) and not self.inputs:
            raise ConfigError("data.inputs is an empty list: name at least one input column (or 'all')")
        if self.min_turnover_20d < 0:
            raise ConfigError(f"data.min_turnover_20d = {self.min_turnover_20d}: expected >= 0")
        if self.clip <= 0:
            raise ConfigError(f"data.clip = {self.clip}: expected > 0")
        if self.pad_multiple < 0:
            raise ConfigError(f"data.pad_multiple = {self.pad_multiple}: expected >= 0")


@dataclass(frozen=True)
class FoldsConfig:
    """Walk-forward folds in sessions: train | embargo | valid | embargo | test; each fold moves on by
    `test_sessions`, so test segments tile the evaluated period (train/splits.py)."""

    mode: Literal["expanding", "rolling"] = "expanding"
    train_sessions: int = 500  # the first fold's training span (rolling: every fold's)
    valid_sessions: int = 120
    test_sessions: int = 120
    embargo: int = 20
    max_folds: int = 0  # 0: as many as the store holds

    def validate(self) -> None:
        for key in ("train_sessions", "valid_sessions", "test_sessions"):
            if getattr(self, key) < 1:
                raise ConfigError(f"train.folds.{key} = {getattr(self, key)}: expected >= 1")
        if self.embargo < 0 or self.max_folds < 0:
            raise ConfigError("train.folds.embargo and train.folds.max_folds must be >= 0")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, early stopping, logging and checkpoints of `gogooku train` (docs/train.md)."""

    name: str = "run"  # the run folder: paths.runs/name
    lr: float = 1e-3  # AdamW peak learning rate
    warmup_steps: int = 100  # linear warmup, then cosine decay to 0 over max_epochs
    weight_decay: float = 1e-4
    clip_norm: float = 1.0  # global gradient-norm clipping
    batch_dates: int = 4  # dates per step (each date is a whole cross-section)
    max_epochs: int = 10
    max_steps: int = 0  # per fold; 0: no cap (max_epochs decides). The schedule decays over the steps run
    patience: int = (
        3  # evaluations (one per epoch) without a better validation RankIC before stopping; 0: off
    )
    seed: int = 0
    log_every: int = 20  # steps between log lines / metrics records
    checkpoint_every: int = 100  # steps between 'latest' checkpoints (also after every evaluation)
    zero_grad_steps: int = 50  # a module whose gradient norm is exactly 0 this many steps is a warning
    shuffle_targets: bool = False  # placebo: training labels permuted across dates (expect noise)
    folds: FoldsConfig = field(default_factory=FoldsConfig)

    def validate(self) -> None:
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ConfigError(f"train.name = {self.name!r}: expected a folder name (no '/')")
        for key in ("batch_dates", "max_epochs", "log_every", "checkpoint_every", "zero_grad_steps"):
            if getattr(self, key) < 1:
                raise ConfigError(f"train.{key} = {getattr(self, key)}: expected >= 1")
        for key in ("lr", "clip_norm"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"train.{key} = {getattr(self, key)}: expected > 0")
        for key in ("warmup_steps", "patience", "weight_decay", "max_steps"):
            if getattr(self, key) < 0:
                raise ConfigError(f"train.{key} = {getattr(self, key)}: expected >= 0")


@dataclass(frozen=True)
class RunModelConfig(ModelConfig):
    """The model section: a ModelConfig plus the name it was read from ('' = the built-in defaults)."""

    config: str = ""


@dataclass(frozen=True)
class Config:
    """The whole run: device, paths and one section per stage."""

    device: Literal["auto", "cpu", "gpu"] = "auto"
    paths: PathsConfig = field(default_factory=PathsConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    fetch: FetchConfig = field(default_factory=FetchConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: RunModelConfig = field(default_factory=RunModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merge(out[key], value) if both else value
    return out


def _model_section(data: Any) -> dict[str, Any]:
    """The model section with its named config file underneath: the file's keys, then the section's."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config key 'model' = {data!r}: expected a section (mapping)")
    name = data.get("config", "")
    if not isinstance(name, str):
        raise ConfigError(f"config key 'model.config' = {name!r}: expected a model config name or path")
    base = read_yaml(resolve_model_config_path(name)) if name else {}
    return _merge(base, data)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a run config from YAML plus `section.key=value` overrides."""
    data = apply_overrides(read_yaml(path) if path is not None else {}, list(overrides or []))
    data["model"] = _model_section(data.get("model"))
    return build_dataclass(Config, data)


def model_config(cfg: Config, n_features: int | None = None) -> ModelConfig:
    """The run's plain ModelConfig (without the file name), with `n_features` set where given."""
    values = {f.name: getattr(cfg.model, f.name) for f in dataclasses.fields(ModelConfig)}
    if n_features is not None:
        values["n_features"] = n_features
    return ModelConfig(**values)


def config_dict(cfg: Any) -> dict[str, Any]:
    """A config as plain YAML-able data (tuples as lists): what a run writes as config.yaml."""

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(dataclasses.asdict(cfg))
