"""Config validation: unknown keys, wrong types and unknown component names are refused clearly."""

from __future__ import annotations

import pytest
import yaml

from nasforge import registry
from nasforge.config import RunConfig, load_config, make_config
from nasforge.errors import ConfigError


def test_defaults_are_the_main_job():
    cfg = make_config({})
    assert (cfg.task, cfg.space, cfg.strategy, cfg.evaluator) == ("digits", "chain", "random", "train")
    assert cfg.resolved()["space_options"]  # the main job narrows the chain space
    assert make_config({"space_options": {}}).resolved_space_options() == {}


def test_flags_override_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"budget": 7, "seed": 3, "strategy": "random"}))
    cfg = load_config(path, {"budget": 9, "seed": None})
    assert cfg.budget == 9 and cfg.seed == 3


@pytest.mark.parametrize("data, expected", [
    ({"budgett": 5}, r"unknown key 'budgett'.*allowed keys: .*budget"),
    ({"budget": "many"}, r"budget = 'many'"),
    ({"budget": 0}, r"budget = 0: .*greater than 0"),
    ({"workers": 0}, r"workers = 0"),
    ({"strategy": "genetic"}, r"unknown strategy 'genetic'; available: .*random"),
    ({"space": "nope"}, r"unknown space 'nope'; available: .*chain"),
    ({"evaluator": "magic"}, r"unknown evaluator 'magic'"),
    ({"task": "imagenet"}, r"unknown task 'imagenet'; available: .*digits"),
    ({"objective": "best:val_acc"}, r"objective = 'best:val_acc'.*max:METRIC"),
    ({"executor": "cluster"}, r"executor = 'cluster'"),
])
def test_bad_config_values_are_refused_with_key_and_value(data, expected):
    with pytest.raises(ConfigError, match=expected):
        make_config(data)


def test_bad_component_option_is_refused_with_allowed_options():
    with pytest.raises(ConfigError, match=r"unknown option 'dedupe_harder'.*Allowed options: .*dedupe"):
        make_config({"strategy_options": {"dedupe_harder": True}})
    with pytest.raises(ConfigError, match=r"option 'dedupe' = 'sometimes'"):
        make_config({"strategy_options": {"dedupe": "sometimes"}})


def test_bad_config_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("budget: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listy)


def test_registry_user_components_and_duplicates():
    @registry.register("strategies", "user_test_strategy")
    class Mine:  # noqa: D401 - a registry entry needs only a constructor here
        def __init__(self, seed: int = 0, width: int = 3):
            self.seed, self.width = seed, width

    assert "user_test_strategy" in registry.available("strategies")
    made = registry.create("strategies", "user_test_strategy", width="5")
    assert made.width == 5  # coerced from text, as from a CLI flag
    with pytest.warns(UserWarning, match="registered again"):
        registry.register("strategies", "user_test_strategy")(type("Other", (), {}))
    with pytest.raises(ConfigError, match="unknown registry kind"):
        registry.available("widgets")


def test_run_config_is_strict_about_assignment():
    cfg = RunConfig()
    with pytest.raises(Exception):
        cfg.budget = -1
