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


def test_scientific_notation_in_a_config_file_is_read_as_a_number(tmp_path):
    # PyYAML (YAML 1.1) reads 1e-3, 3.0e1 and 5E1 as text; where a number is expected they are numbers
    path = tmp_path / "run.yaml"
    path.write_text("name: 1e3\nbudget: 5E1\ntime_budget: 3.0e1\n"
                    "evaluator_options: {lr: 1e-3, epochs: 2e0, early_stop_threshold: 5E-1}\n"
                    "strategy: evolution\nstrategy_options: {population_size: 1.6e1}\n")
    assert yaml.safe_load(path.read_text())["budget"] == "5E1"  # the YAML 1.1 reading
    cfg = load_config(path)
    assert cfg.name == "1e3"  # a text option stays text
    assert cfg.budget == 50 and type(cfg.budget) is int
    assert cfg.time_budget == 30.0
    assert cfg.evaluator_options == {"lr": 0.001, "epochs": 2, "early_stop_threshold": 0.5}
    assert type(cfg.evaluator_options["epochs"]) is int
    assert cfg.strategy_options == {"population_size": 16}
    # the keys the file set are still those a --resume --config compares with the run's config
    assert set(cfg.model_dump(exclude_unset=True)) == {
        "name", "budget", "time_budget", "evaluator_options", "strategy", "strategy_options"}
    plain = tmp_path / "plain.yaml"
    plain.write_text("budget: 3\n")
    assert load_config(plain).model_dump(exclude_unset=True) == {"budget": 3}
    saved = yaml.safe_load(yaml.safe_dump(cfg.resolved(), sort_keys=False))  # as config.yaml
    assert saved["evaluator_options"]["lr"] == 0.001 and saved["budget"] == 50
    # the same through -o (the CLI parses each VALUE as YAML) and the Python API
    from nasforge.cli import _parse_sets

    over = load_config(None, _parse_sets(["evaluator.lr=1e-3", "evaluator.epochs=1E1"]))
    assert over.evaluator_options == {"lr": 0.001, "epochs": 10}
    made = registry.create("evaluators", "train", lr="3.0e1", epochs="5E4")
    assert made.config.lr == 30.0 and made.config.epochs == 50000


@pytest.mark.parametrize("data, expected", [
    ({"evaluator_options": {"lr": "fast"}},
     r"^evaluator 'train': option 'lr' = 'fast': expected a number \(e\.g\. 0\.001 or 1e-3\)"),
    ({"evaluator_options": {"epochs": "1.5e0"}},
     r"option 'epochs' = '1\.5e0': expected an integer, got a number with a fractional part"),
    ({"evaluator_options": {"epochs": "many"}}, r"option 'epochs' = 'many': expected an integer"),
    ({"evaluator_options": {"early_stop_threshold": "half"}},
     r"option 'early_stop_threshold' = 'half': expected a number"),
    ({"budget": "5E1.5"}, r"budget = '5E1\.5': expected an integer"),
    ({"time_budget": "soon"}, r"time_budget = 'soon': expected a number"),
])
def test_a_non_number_for_a_numeric_option_is_one_clear_line(data, expected):
    with pytest.raises(ConfigError, match=expected) as info:
        make_config(data)
    assert "\n" not in str(info.value) and "Input should be" not in str(info.value)


def test_numeric_default_without_annotation_expects_a_number():
    @registry.register("strategies", "user_test_unannotated")
    class Plain:
        def __init__(self, seed=0, rate=0.5, steps=10, label="x"):
            self.seed, self.rate, self.steps, self.label = seed, rate, steps, label

    made = registry.create("strategies", "user_test_unannotated", rate="2.5e-1", steps="1e2",
                           label="1e3")
    assert (made.rate, made.steps, made.label) == (0.25, 100, "1e3")
    assert registry.create("strategies", "user_test_unannotated", rate=None).rate is None
    with pytest.raises(ConfigError, match=r"option 'rate' = 'quick': expected a number"):
        registry.create("strategies", "user_test_unannotated", rate="quick")


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "NaN", "Infinity", ".nan", "-.inf", "1e400"])
def test_a_non_finite_number_option_is_refused_naming_it(tmp_path, capsys, monkeypatch, raw):
    """nan/inf as text (``-o``) or as YAML floats (``.nan``, ``1e400`` in a file): one line, exit 2,
    nothing written; before this, pydantic took them and the run trained with them."""
    from nasforge.cli import _parse_sets
    from nasforge.testing import main_in_process

    value = _parse_sets([f"evaluator.dropout={raw}"])["evaluator_options"]["dropout"]
    with pytest.raises(ConfigError, match=r"^evaluator 'train': option 'dropout' = .*: expected "
                       r"a finite number \(e\.g\. 0\.001 or 1e-3\)\. Allowed options: "):
        make_config({"evaluator_options": {"dropout": value}})
    if raw != "1e400":  # a whole number to an int option (as large as it is)
        with pytest.raises(ConfigError, match=r"option 'epochs' = .*: expected an integer"):
            make_config({"evaluator_options": {"epochs": value}})
    with pytest.raises(ConfigError, match=r"option 'val_fraction' = .*: expected a finite number"):
        make_config({"task_options": {"val_fraction": value}})
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    code = main_in_process("search", "-o", f"evaluator.dropout={raw}", "--budget", "1")
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "option 'dropout'" in err, err
    assert "finite number" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("key", ["time_budget", "cost_budget", "budget", "batch"])
def test_a_non_finite_top_level_number_is_refused(tmp_path, key):
    for value in ("nan", "inf", float("inf"), float("nan"), float("-inf")):
        with pytest.raises(ConfigError, match=rf"^invalid config in config: {key} = .*: expected "
                           + ("a finite number" if "budget" in key and key != "budget"
                              else "an integer")) as info:
            make_config({key: value})
        assert "\n" not in str(info.value)
    path = tmp_path / "run.yaml"
    path.write_text(f"{key}: .inf\n")
    with pytest.raises(ConfigError, match=rf"invalid config in {path}: {key} = inf"):
        load_config(path)
    assert make_config({"time_budget": "1e1", "cost_budget": 5.5}).time_budget == 10.0


def test_an_option_with_an_infinite_default_accepts_inf_but_not_nan():
    import math

    @registry.register("strategies", "user_test_infinite")
    class Patient:
        def __init__(self, seed: int = 0, patience: float = math.inf, rate: float = 0.5):
            self.seed, self.patience, self.rate = seed, patience, rate

    for raw in ("inf", float("inf"), "-inf"):
        made = registry.create("strategies", "user_test_infinite", patience=raw)
        assert math.isinf(made.patience)
    assert registry.create("strategies", "user_test_infinite", patience="1e2").patience == 100.0
    for raw in ("nan", float("nan")):
        with pytest.raises(ConfigError, match=r"option 'patience' = .*: expected a number "
                           r"\(e\.g\. 0\.001, 1e-3 or inf\); nan is no number"):
            registry.create("strategies", "user_test_infinite", patience=raw)
    with pytest.raises(ConfigError, match=r"option 'rate' = 'inf': expected a finite number"):
        registry.create("strategies", "user_test_infinite", rate="inf")


def test_true_or_false_for_a_number_option_is_refused(tmp_path, capsys, monkeypatch):
    """``-o evaluator.dropout=true`` is YAML's True; validation would read it as 1.0 (dropout 1:
    every activation dropped). Refused in one line; bool options still take true/false."""
    from nasforge.cli import _parse_sets
    from nasforge.testing import main_in_process

    value = _parse_sets(["evaluator.dropout=true"])["evaluator_options"]["dropout"]
    assert value is True
    with pytest.raises(ConfigError, match=r"option 'dropout' = True: expected a number, got true"):
        make_config({"evaluator_options": {"dropout": value}})
    with pytest.raises(ConfigError, match=r"option 'epochs' = False: expected an integer, got false"):
        make_config({"evaluator_options": {"epochs": False}})
    assert make_config({"evaluator_options": {"batch_norm_head": True}}) \
        .evaluator_options["batch_norm_head"] is True
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    code = main_in_process("search", "-o", "evaluator.dropout=true", "--budget", "1")
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "got true" in err, err
    assert list(tmp_path.iterdir()) == []
