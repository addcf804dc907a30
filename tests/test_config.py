"""Config loading, overrides and the errors a user sees."""

import pytest

from etl.config import ConfigError, apply_overrides, parse_override
from train.config import Config, load_config


def test_demo_config_loads_with_types():
    cfg = load_config("configs/demo.yaml")
    assert isinstance(cfg, Config)
    assert cfg.synth.stocks == 300
    assert cfg.synth.start == "2019-01-01"  # YAML dates come back as ISO strings
    assert isinstance(cfg.graph.threshold, float)


def test_full_config_loads():
    assert load_config("configs/full.yaml").synth.stocks == 4000


def test_defaults_without_file():
    assert load_config() == Config()


def test_overrides_are_parsed_as_yaml_and_applied():
    cfg = load_config("configs/demo.yaml", ["synth.stocks=50", "graph.threshold=0.25", "device=cpu"])
    assert cfg.synth.stocks == 50
    assert cfg.graph.threshold == 0.25
    assert cfg.device == "cpu"


def test_int_is_accepted_for_float():
    assert load_config(None, ["graph.threshold=0"]).graph.threshold == 0.0


def test_parse_override():
    assert parse_override("train.lr=3e-4") == (["train", "lr"], 3e-4)
    assert parse_override("a=[1, 2]") == (["a"], [1, 2])
    assert parse_override("a.b=hello") == (["a", "b"], "hello")


def test_apply_overrides_does_not_mutate_input():
    data = {"synth": {"stocks": 1}}
    out = apply_overrides(data, ["synth.stocks=2"])
    assert data["synth"]["stocks"] == 1 and out["synth"]["stocks"] == 2


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "synth.stokcs=5",
            "unknown config key 'synth.stokcs' (allowed: end, flow_bp, halt_rate, idio_dof, lead_lag_bp, "
            "pead_bp, peer_spillover, reversal_bp, sector_momentum_bp, seed, squeeze_bp, start, stocks)",
        ),
        ("nosuch.x=1", "unknown config key 'nosuch'"),
        ("synth.stocks=many", "config key 'synth.stocks' = 'many': expected int"),
        ("synth.stocks=1.5", "config key 'synth.stocks' = 1.5: expected int"),
        ("device=tpu", "config key 'device' = 'tpu': expected one of 'auto', 'cpu', 'gpu'"),
        ("graph.k=true", "config key 'graph.k' = True: expected int"),
        ("synth.stocks=3", "synth.stocks' = 3: expected at least 10"),
        ("synth.start=2019-13-01", "synth.start' = '2019-13-01': expected a date"),
        ("graph.min_obs=100", "graph.min_obs = 100"),
        ("synth=5", "config key 'synth' = 5: expected a section"),
        ("novalue", "must look like section.key=value"),
    ],
)
def test_bad_overrides_name_key_value_and_allowed(override, expected):
    with pytest.raises(ConfigError) as err:
        load_config("configs/demo.yaml", [override])
    assert expected in str(err.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("synth: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(scalar)
