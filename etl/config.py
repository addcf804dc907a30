"""Typed configs: YAML files loaded into frozen dataclasses, with `key=value` overrides from the CLI.

Every section is a dataclass whose field types are checked on load; an unknown key or a value of the wrong
type is a `ConfigError` naming the key, the value and what is allowed. No config float may be NaN or +-inf.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from etl.errors import GogookuError


class ConfigError(GogookuError):
    """A config file or override that does not fit the schema."""


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (tuple, list):
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check `value` against the annotation `tp` and return it in canonical form."""
    origin = typing.get_origin(tp)
    bad = ConfigError(f"config key '{key}' = {value!r}: expected {_type_name(tp)}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if value is None:  # a YAML section with no keys under it (`train:`): all defaults
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' = {value!r}: expected a section (mapping)")
        return build_dataclass(tp, value, prefix=key + ".")
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise bad
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None  # before a section type, which would read None as an empty section
        for arg in typing.get_args(tp):
            try:
                return _coerce(key, value, arg)
            except ConfigError:
                continue
        raise bad
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise bad
        (inner, *_rest) = typing.get_args(tp)
        return tuple(_coerce(f"{key}[{i}]", v, inner) for i, v in enumerate(value))
    if tp is type(None):
        if value is None:
            return None
        raise bad
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string, in files and in lists
            try:
                value = float(value)
            except ValueError:
                raise bad from None
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise bad
        if not math.isfinite(value):  # a NaN would flow through training and scoring without an error
            raise ConfigError(f"config key '{key}' = {value!r}: expected a finite number")
        return float(value)
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if hasattr(value, "isoformat"):  # YAML turns 2020-01-01 into a date; keep dates as ISO strings
            return value.isoformat()
        raise bad
    raise TypeError(f"unsupported config annotation {tp!r} for '{key}'")


def build_dataclass(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass `cls` from a mapping, checking every key and value."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            allowed = ", ".join(sorted(fields))
            raise ConfigError(f"unknown config key '{prefix}{key}' (allowed: {allowed})")
    kwargs = {name: _coerce(prefix + name, value, hints[name]) for name, value in data.items()}
    instance = cls(**kwargs)
    check = getattr(instance, "validate", None)
    if check is not None:
        check()
    return instance


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.lr=3e-4` -> (['train', 'lr'], 0.0003); the value is parsed as YAML (so 3, 0.1, true, [1,2])."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except (yaml.YAMLError, ValueError):  # ValueError: YAML's date parser on 2019-13-01
        value = raw
    if isinstance(value, str):  # YAML 1.1 reads 3e-4 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    return key.split("."), value


def merge_sections(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`, section by section: a mapping (or an empty section, None) laid on a section
    changes only the keys it names, so the section's other keys keep their values; anything else replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(out.get(key), dict) and (value is None or isinstance(value, dict)):
            out[key] = merge_sections(out[key], value or {})
        else:
            out[key] = value
    return out


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b=value` overrides to a nested mapping (keys are checked later, against the dataclass).

    A mapping value merges into the section key by key, recursively (`merge_sections`):
    `train.folds={embargo: 30}` changes the embargo and keeps the YAML's other fold keys, as
    `train.folds.embargo=30` does.
    """
    out = _deep_copy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for i, part in enumerate(path[:-1]):
            if node.get(part) is None:  # absent, or an empty YAML section
                node[part] = {}
            child = node[part]
            if not isinstance(child, dict):
                raise ConfigError(f"override '{text}': '{'.'.join(path[: i + 1])}' is not a section")
            node = child
        node[path[-1]] = merge_sections(node, {path[-1]: value})[path[-1]]
    return out


def _deep_copy(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in data.items()}


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or bad YAML is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections")
    return data


def load_dataclass(cls: type, path: str | Path | None = None, overrides: list[str] | None = None) -> Any:
    """Load `cls` from an optional YAML file plus overrides; defaults fill what neither gives."""
    data = read_yaml(path) if path is not None else {}
    return build_dataclass(cls, apply_overrides(data, list(overrides or [])))


# The ETL stages' config sections; `train.config.Config` composes them into the run config.


def _check_date(key: str, value: str) -> None:
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"config key '{key}' = {value!r}: expected a date YYYY-MM-DD") from None


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
    # share of each stock's specific variance that is its 5 hidden peers' shocks of the same day: the larger,
    # the more hidden peers co-move and the more of them the correlation graph finds (docs/synthetic.md)
    peer_spillover: float = 0.15
    idio_dof: float = 4.0  # Student-t degrees of freedom of idiosyncratic noise
    halt_rate: float = 0.002  # base probability of a no-trade session (x5 for small caps)

    def validate(self) -> None:
        if self.stocks < 10:
            raise ConfigError(f"config key 'synth.stocks' = {self.stocks}: expected at least 10")
        if self.seed < 0:  # numpy's SeedSequence takes no negative seed
            raise ConfigError(f"config key 'synth.seed' = {self.seed}: expected >= 0")
        if self.idio_dof <= 2.0:
            raise ConfigError(
                f"config key 'synth.idio_dof' = {self.idio_dof}: expected > 2 (finite variance)"
            )
        if not 0.0 <= self.peer_spillover < 1.0:
            raise ConfigError(
                f"config key 'synth.peer_spillover' = {self.peer_spillover}: expected 0 <= share < 1 "
                "(each stock keeps some variance of its own)"
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
