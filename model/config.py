"""Model and loss configuration: frozen dataclasses loaded from `configs/model/*.yaml`.

`load_model_config("tiny")` reads `configs/model/tiny.yaml`; a path works too. Sizes live here so the module
tree is fixed at init and nothing is created at call time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from etl.config import ConfigError, load_dataclass

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "model"


@dataclass(frozen=True)
class LossConfig:
    """Loss weights: pinball over quantiles + (1 - Pearson IC of the median) + optional soft Spearman."""

    pinball_weight: float = 1.0
    ic_weight: float = 1.0  # the ranking term: at 0.1 the demo learned no h=1 ranking (docs/results.md)
    spearman_weight: float = 0.0
    spearman_temperature: float = 0.01  # soft-rank sigmoid scale, in units of the prediction
    horizon_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0)

    def validate(self) -> None:
        for name in ("pinball_weight", "ic_weight", "spearman_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"model loss.{name} = {getattr(self, name)}: expected >= 0")
        if self.spearman_temperature <= 0:
            raise ConfigError(f"loss.spearman_temperature = {self.spearman_temperature}: expected > 0")
        if any(w < 0 for w in self.horizon_weights) or sum(self.horizon_weights) <= 0:
            raise ConfigError(
                f"loss.horizon_weights = {list(self.horizon_weights)}: expected >= 0 with a positive sum"
            )


@dataclass(frozen=True)
class ModelConfig:
    """ATFT-GAT-FAN sizes. `n_features` is F of the batch; ids outside [0, n) map to an 'unknown' row."""

    n_features: int = 380
    lookback: int = 20
    hidden: int = 64
    fan_top_k: int = 3
    fan: bool = (
        True  # False: the ablation without FAN's residual and trend channels (model/fan.py plain_inputs)
    )
    highway: bool = True  # linear maps of the own and the graph neighbours' latest inputs to the quantiles
    n_sector33: int = 34  # sector33_id 0..33 (FEATURES.md #10); -1 = unknown
    n_market: int = 7  # market section id 0..6; -1 = unknown
    n_edge_features: int = 4  # (rho, |rho|, same sector, same market)
    lstm_layers: int = 1
    attention_heads: int = 4
    gat_layers: int = 2
    gat_heads: int = 4
    dropout: float = 0.1
    horizons: tuple[int, ...] = (1, 2, 3, 5, 10)
    quantiles: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)
    compute_dtype: Literal["float32", "bfloat16"] = "float32"
    loss: LossConfig = field(default_factory=LossConfig)

    def validate(self) -> None:
        positive = ("n_features", "lookback", "hidden", "fan_top_k", "n_sector33", "n_market")
        positive += ("n_edge_features", "lstm_layers", "attention_heads", "gat_heads")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} = {getattr(self, name)}: expected >= 1")
        if self.gat_layers < 0:
            raise ConfigError(f"model.gat_layers = {self.gat_layers}: expected >= 0")
        if self.fan_top_k > self.lookback // 2 + 1:
            raise ConfigError(
                f"model.fan_top_k = {self.fan_top_k}: at most lookback//2 + 1 = {self.lookback // 2 + 1} bins"
            )
        for name, heads in (("attention_heads", self.attention_heads), ("gat_heads", self.gat_heads)):
            if self.hidden % heads:
                raise ConfigError(f"model.hidden = {self.hidden} must be divisible by model.{name} = {heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout = {self.dropout}: expected 0 <= dropout < 1")
        # distinct: each horizon names a label column (target_{h}d) and an output of the heads
        if (
            not self.horizons
            or any(h < 1 for h in self.horizons)
            or len(set(self.horizons)) < len(self.horizons)
        ):
            raise ConfigError(
                f"model.horizons = {list(self.horizons)}: expected distinct positive day counts"
            )
        q = self.quantiles
        if any(not 0.0 < v < 1.0 for v in q) or list(q) != sorted(set(q)) or 0.5 not in q:
            raise ConfigError(
                f"model.quantiles = {list(q)}: expected strictly increasing levels in (0, 1) including 0.5"
            )
        if len(self.loss.horizon_weights) != len(self.horizons):  # the default has 5 weights, for 5 horizons
            raise ConfigError(
                f"model.loss.horizon_weights has {len(self.loss.horizon_weights)} entries for "
                f"{len(self.horizons)} model.horizons {list(self.horizons)}: set "
                f"model.loss.horizon_weights=[{','.join(['1'] * len(self.horizons))}] too, one weight "
                "per horizon"
            )

    @property
    def median_index(self) -> int:
        return self.quantiles.index(0.5)


def resolve_model_config_path(name_or_path: str | Path) -> Path:
    """`tiny` -> configs/model/tiny.yaml; an existing path is returned as is."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    named = CONFIG_DIR / f"{name_or_path}.yaml"
    if named.is_file():
        return named
    known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    raise ConfigError(f"model config '{name_or_path}' not found (a YAML path or one of: {known})")


def load_model_config(
    name_or_path: str | Path | None = None, overrides: list[str] | None = None
) -> ModelConfig:
    """Load a ModelConfig from a name under configs/model/, a YAML path, or defaults (None)."""
    path = None if name_or_path is None else resolve_model_config_path(name_or_path)
    return load_dataclass(ModelConfig, path, overrides)
