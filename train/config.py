"""The run config: one YAML file (`configs/demo.yaml`) with a section per pipeline stage.

The ETL's sections (synth, graph, fetch) live in `etl.config`; this module composes them with the run's own
(data, model, train); `load_config(path, ["train.lr=3e-4"])` checks every key and value.

The `model:` section names a model config (`config: tiny | base | a YAML path`, see configs/model/) and may
override any of its keys (`model.hidden=32`); its `n_features` is set by the run from the chosen inputs.
"""

from __future__ import annotations

import dataclasses
import typing
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
    merge_sections,
    read_yaml,
)
from model.config import ModelConfig, resolve_model_config_path


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
class DataConfig:
    """What the model sees: its inputs and each date's universe (both recorded in a run's inputs.json)."""

    inputs: str | tuple[str, ...] = "all"  # "all": every role-I column of the catalog; or a list of them
    exclude_sector9999: bool = True  # ETFs and other sector-9999 issues leave the universe
    min_turnover_20d: float = 0.0  # yen: mean TurnoverValue over the last 20 sessions (0: no floor)
    clip: float = 5.0  # robust z-scores are clipped to +-clip
    pad_multiple: int = 0  # Npad rounds up to this; 0: 128 on a GPU, 8 on a CPU
    # "correlation": each date's correlation graph; "shuffled" (ablation): its edges relabelled by a random
    # permutation of the date's universe stocks (seeded by train.seed), so only the degree structure is kept
    graph: Literal["correlation", "shuffled"] = "correlation"

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
        if not 0 <= self.seed < 2**32:  # numpy's generators take no negative seed; jax.random.key overflows
            raise ConfigError(f"train.seed = {self.seed}: expected 0 <= seed < 2**32")


@dataclass(frozen=True)
class BaselineConfig:
    """The LightGBM baseline of `gogooku baseline` (train/baseline.py, docs/evaluate.md): one model per fold
    and horizon on the model's inputs at date t and its rank-normalised labels. The defaults are sized for
    the demo (all folds and horizons in about a minute on two cores)."""

    num_boost_round: int = 200  # most trees; early stopping usually ends far sooner
    learning_rate: float = 0.1
    num_leaves: int = 31
    min_data_in_leaf: int = 200
    feature_fraction: float = 0.25  # share of the inputs each tree may split on
    bagging_fraction: float = 0.25  # share of the training rows each tree sees (1: all, no bagging)
    max_bin: int = 63  # histogram bins per input
    early_stopping_rounds: int = 10  # trees without a better validation RankIC before stopping
    num_threads: int = 0  # 0: every CPU core; identical predictions need the same count
    seed: int = 0

    def validate(self) -> None:
        for key in ("num_boost_round", "num_leaves", "min_data_in_leaf", "early_stopping_rounds"):
            if getattr(self, key) < 1:
                raise ConfigError(f"baseline.{key} = {getattr(self, key)}: expected >= 1")
        if self.num_leaves < 2:
            raise ConfigError(f"baseline.num_leaves = {self.num_leaves}: expected >= 2")
        if self.learning_rate <= 0:
            raise ConfigError(f"baseline.learning_rate = {self.learning_rate}: expected > 0")
        for key in ("feature_fraction", "bagging_fraction"):
            if not 0 < getattr(self, key) <= 1:
                raise ConfigError(f"baseline.{key} = {getattr(self, key)}: expected 0 < value <= 1")
        if self.max_bin < 2:
            raise ConfigError(f"baseline.max_bin = {self.max_bin}: expected >= 2")
        if self.num_threads < 0:
            raise ConfigError(f"baseline.num_threads = {self.num_threads}: expected >= 0")


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
    eval: MetricsConfig = field(default_factory=MetricsConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)


def _model_section(data: Any) -> dict[str, Any]:
    """The model section with its named config file underneath: the file's keys, then the section's."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config key 'model' = {data!r}: expected a section (mapping)")
    name = data.get("config", "")
    if not isinstance(name, str):
        raise ConfigError(f"config key 'model.config' = {name!r}: expected a model config name or path")
    # A run folder's config.yaml gives every key, so it never needs the file (which may not have travelled
    # with the run to the machine that evaluates it).
    base = read_yaml(resolve_model_config_path(name)) if name and not _complete(data, ModelConfig) else {}
    return merge_sections(base, data)


def _complete(data: dict[str, Any], cls: type) -> bool:
    """Whether `data` gives every field of dataclass `cls`, nested sections included."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in data:
            return False
        inner, tp = data[f.name], hints[f.name]
        if dataclasses.is_dataclass(tp) and not (isinstance(inner, dict) and _complete(inner, tp)):
            return False
    return True


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


def config_diffs(was: dict[str, Any], now: dict[str, Any], skip: tuple[str, ...] = ()) -> list[str]:
    """`key: old vs new` for each setting that differs between two config dicts, nested sections as
    `a.b` (keys in `skip` aside): the one way a refusal names what changed."""

    def flat(section: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in section.items():
            if isinstance(value, dict):
                out.update(flat(value, f"{prefix}{key}."))
            else:
                out[f"{prefix}{key}"] = value
        return out

    a, b = flat(was), flat(now)
    keys = [k for k in dict.fromkeys([*a, *b]) if k not in skip]
    return [f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]


def config_dict(cfg: Any) -> dict[str, Any]:
    """A config as plain YAML-able data (tuples as lists): what a run writes as config.yaml."""

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(dataclasses.asdict(cfg))
