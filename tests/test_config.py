"""Config loading, overrides and the errors a user sees."""

import re

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


@pytest.mark.parametrize(
    "override",
    [
        "data.clip=nan",
        "data.clip=.inf",
        "train.lr=inf",
        "train.weight_decay=-inf",
        "eval.cost_bp=.nan",
        "baseline.learning_rate=nan",
        "synth.reversal_bp=inf",
        "model.loss.spearman_temperature=nan",
        "model.loss.horizon_weights=[1, 1, .nan, 1, 1]",  # in a YAML list: .nan, .inf
        "model.quantiles=[0.1, 0.5, .inf]",
    ],
)
def test_non_finite_floats_are_rejected(override):
    key = override.split("=")[0].replace("horizon_weights", "horizon_weights[2]")
    key = key.replace("quantiles", "quantiles[2]")
    with pytest.raises(ConfigError, match=rf"config key '{re.escape(key)}' = .*expected a finite number"):
        load_config("configs/demo.yaml", [override])


def test_non_finite_float_in_yaml_file_is_rejected(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  min_turnover_20d: .nan\n")
    with pytest.raises(ConfigError, match="'data.min_turnover_20d' = nan: expected a finite number"):
        load_config(path)


def test_a_float_written_without_a_dot_is_a_float_in_files_and_lists(tmp_path):
    """PyYAML (YAML 1.1) reads 1e-3 as a string unless it has a dot: a float setting takes the number."""
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 1e-3\nmodel:\n  loss:\n    horizon_weights: [2e-1, 1, 1, 1, 1]\n")
    cfg = load_config(path, ["model.loss.horizon_weights=[1e-3, 1, 1, 1, 1]"])
    assert cfg.train.lr == 1e-3 and cfg.model.loss.horizon_weights[0] == 1e-3
    assert load_config(path).model.loss.horizon_weights[0] == 0.2
    with pytest.raises(ConfigError, match="'train.lr' = 'fast'"):
        load_config(path, ["train.lr=fast"])
    with pytest.raises(ConfigError, match="expected a finite number"):
        load_config(path, ["model.loss.horizon_weights=[nan, 1, 1, 1, 1]"])


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.seed=-1", "train.seed = -1: expected 0 <= seed < 2**32"),
        (f"train.seed={2**32}", "train.seed = 4294967296"),
        ("synth.seed=-1", "'synth.seed' = -1: expected >= 0"),
        ("model.horizons=[1,1,2,3,5]", "model.horizons = [1, 1, 2, 3, 5]: expected distinct positive"),
        ("model.horizons=[0,1,2,3,5]", "expected distinct positive day counts"),
        ("model.horizons=[1,50]", "set model.loss.horizon_weights=[1,1] too, one weight per horizon"),
    ],
)
def test_bad_seeds_and_horizons(override, expected):
    with pytest.raises(ConfigError) as err:
        load_config("configs/demo.yaml", [override])
    assert expected in str(err.value)


def test_horizons_with_matching_weights_load():
    cfg = load_config("configs/demo.yaml", ["model.horizons=[1,50]", "model.loss.horizon_weights=[1,1]"])
    assert cfg.model.horizons == (1, 50) and cfg.model.loss.horizon_weights == (1.0, 1.0)


def test_mapping_override_merges_into_the_section():
    cfg = load_config("configs/demo.yaml", ["train.folds={embargo: 30}"])
    assert cfg.train.folds.embargo == 30
    assert cfg.train.folds.mode == "rolling"  # the YAML's, not the default 'expanding'
    assert cfg.train.name == "demo"
    cfg = load_config("configs/demo.yaml", ["train={folds: {max_folds: 1}, lr: 0.5}"])
    assert (cfg.train.folds.max_folds, cfg.train.folds.mode, cfg.train.lr) == (1, "rolling", 0.5)
    assert cfg.train.batch_dates == 8


def test_apply_overrides_merges_recursively():
    data = {"a": {"b": {"c": 1, "d": 2}, "e": 3}}
    out = apply_overrides(data, ["a={b: {c: 9}}"])
    assert out == {"a": {"b": {"c": 9, "d": 2}, "e": 3}}
    assert data["a"]["b"]["c"] == 1
    assert apply_overrides({"a": {"b": 1}}, ["a.b={x: 1}"]) == {"a": {"b": {"x": 1}}}  # a value: replaced


def test_empty_yaml_section_means_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\ndata:\nmodel:\n  config: tiny\n  loss:\n")
    cfg = load_config(path)
    assert cfg.train == Config().train and cfg.data == Config().data
    assert load_config(path, ["train.lr=0.5"]).train.lr == 0.5
    assert cfg.model.loss == load_config(None, ["model.config=tiny"]).model.loss


def test_null_stays_null_for_an_optional_value():
    assert load_config(None, ["fetch.requests_per_minute=null"]).fetch.requests_per_minute is None


def test_a_run_config_loads_without_its_model_file(tmp_path):
    """config.yaml of a run gives every model key, so the named model file need not travel with the run; a
    config that gives only some keys still reads the file under them (and says when it is missing)."""
    import yaml

    from train.config import config_dict

    own = tmp_path / "mine.yaml"
    own.write_text("hidden: 24\nloss:\n  ic_weight: 0.5\n")
    cfg = load_config(None, [f"model.config={own}"])
    assert cfg.model.hidden == 24 and cfg.model.loss.ic_weight == 0.5
    run = tmp_path / "config.yaml"
    run.write_text(yaml.safe_dump(config_dict(cfg)))
    own.unlink()
    assert load_config(run) == cfg
    with pytest.raises(ConfigError, match="not found"):
        load_config(None, [f"model.config={own}", "model.hidden=32"])
    partial = yaml.safe_load(run.read_text())
    del partial["model"]["loss"]["ic_weight"]  # one nested key short: the file is needed again
    run.write_text(yaml.safe_dump(partial))
    with pytest.raises(ConfigError, match="not found"):
        load_config(run)


def test_config_diffs_name_each_changed_leaf():
    from train.config import config_diffs

    was = {"lr": 0.1, "folds": {"embargo": 20, "mode": "rolling"}, "gone": 1}
    now = {"lr": 0.1, "folds": {"embargo": 30, "mode": "rolling"}, "new": [1, 2]}
    assert config_diffs(was, now) == ["folds.embargo: 20 vs 30", "gone: 1 vs None", "new: None vs [1, 2]"]
    assert config_diffs(was, now, skip=("folds.embargo", "gone", "new")) == []
