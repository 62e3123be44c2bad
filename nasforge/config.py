"""The config of a run: a pydantic model, loaded from YAML and/or CLI flags, saved with the run.

Unknown keys, wrong types and unknown component names are refused with the key, the value and
what is allowed. Component options (``space_options`` ...) are checked against the component's
constructor. Nothing in a config is imported or evaluated as code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field

from . import registry
from .core import Constraint, Objectives
from .errors import ConfigError

# The main job (`nasforge search` with no arguments) narrows the chain space so that a random
# search with full training finishes in about 3 minutes on 2 CPU cores. The space's own defaults
# (ChainSpace) stay those of DP-NAS.
DEMO_CHAIN_OPTIONS: dict[str, Any] = {
    "features": [16, 32, 64],
    "min_conv": 2,
    "max_conv": 5,
}
DEMO_BUDGET = 30  # about 7 s per trial with full training on 2 cores (measured 2026-12-01)
# The main job trades accuracy against size: on digits validation accuracy saturates after a few
# trials, so the Pareto front (what each extra parameter buys) says more than a leaderboard.
DEMO_OBJECTIVES = ["max:val_acc", "min:params"]
SEED_LIMIT = 2**32  # seeds are 0 <= seed < 2**32, the range every generator we use accepts


def check_seed(value: Any, what: str = "seed") -> int:
    """The one seed check of every entry point: an integer with 0 <= seed < 2**32."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < SEED_LIMIT:
        raise ConfigError(f"{what} = {value!r}; expected an integer with 0 <= {what} < 2**32 "
                          f"({SEED_LIMIT})")
    return value


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class RunConfig(BaseModel):
    """Everything that defines a search. Defaults give the main job (random search on digits)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: str | None = None
    task: str = "digits"
    task_options: dict[str, Any] = Field(default_factory=dict)
    space: str = "chain"
    space_options: dict[str, Any] | None = None  # None: the main job's narrowing for chain
    strategy: str = "random"
    strategy_options: dict[str, Any] = Field(default_factory=dict)
    evaluator: str = "train"
    evaluator_options: dict[str, Any] = Field(default_factory=dict)
    objective: str | list[str] = Field(default_factory=lambda: list(DEMO_OBJECTIVES))
    constraints: list[str] = Field(default_factory=list)
    budget: int | None = Field(default=DEMO_BUDGET, gt=0)
    time_budget: float | None = Field(default=None, gt=0, description="minutes")
    cost_budget: float | None = Field(default=None, gt=0, description="simulated seconds")
    workers: int = Field(default=1, ge=1)
    executor: str | None = None  # local, process, ray; None: process when workers > 1
    executor_options: dict[str, Any] = Field(default_factory=dict)  # e.g. ray's address
    batch: int | None = Field(default=None, ge=1)  # trials asked at once; None: = workers
    # a proposal equal to an architecture the search already evaluated (ok): evaluate it again
    # with a new seed, or reuse the earlier result (nasforge.run.loop, docs/methods.md)
    repeats: str = "evaluate"
    seed: int = 0
    keep_trials: bool = False
    export: bool = True  # write best/model.onnx when the search ends (`nasforge export` can later)
    method: str = "multitrial"  # what drives the run (nasforge.methods)
    method_options: dict[str, Any] = Field(default_factory=dict)
    _notes: list[str] = pydantic.PrivateAttr(default_factory=list)

    @pydantic.field_validator("task", "space", "strategy", "evaluator", "method")
    @classmethod
    def _known_component(cls, v: str, info: pydantic.ValidationInfo) -> str:
        kind = {"task": "tasks", "space": "spaces", "strategy": "strategies",
                "evaluator": "evaluators", "method": "methods"}[info.field_name]
        registry.get(kind, v.split(":", 1)[0] if kind == "evaluators" else v)
        return v

    @pydantic.field_validator("executor")
    @classmethod
    def _known_executor(cls, v: str | None) -> str | None:
        if v is not None:
            registry.get("executors", v)
        return v

    @pydantic.field_validator("executor_options")
    @classmethod
    def _no_workers_option(cls, v: dict[str, Any]) -> dict[str, Any]:
        if "workers" in v:
            raise ValueError(f"workers = {v['workers']!r} is set by the top-level key workers "
                             "(--workers), not as an executor option")
        return v

    @pydantic.field_validator("repeats", mode="before")
    @classmethod
    def _valid_repeats(cls, v: Any) -> str:
        from .errors import RunError
        from .run.loop import check_repeats

        try:
            return check_repeats(v)
        except RunError as exc:
            raise ValueError(str(exc).removeprefix(f"repeats = {v!r}; ")) from None

    @pydantic.field_validator("seed")
    @classmethod
    def _valid_seed(cls, v: int) -> int:
        try:
            return check_seed(v)
        except ConfigError as exc:
            raise ValueError(str(exc).removeprefix(f"seed = {v!r}; ")) from None

    @pydantic.field_validator("objective")
    @classmethod
    def _valid_objective(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and len(v) == 1:
            v = v[0]  # one objective is saved as a text, as before multi-objective runs
        try:
            Objectives.of(v)
        except ValueError as exc:
            raise ValueError(f"{exc}; write each as 'max:METRIC' or 'min:METRIC'") from None
        return v

    @pydantic.field_validator("constraints")
    @classmethod
    def _valid_constraints(cls, v: list[str]) -> list[str]:
        for text in v:
            Constraint.parse(text)
        return v

    # -- resolved values ---------------------------------------------------------------------------
    def resolved_space_options(self) -> dict[str, Any]:
        if self.space_options is None:
            return dict(DEMO_CHAIN_OPTIONS) if self.space == "chain" else {}
        return dict(self.space_options)

    def evaluator_name_and_options(self) -> tuple[str, dict[str, Any]]:
        """``table:PATH`` is shorthand for the table evaluator with ``path=PATH``."""
        name, _, arg = self.evaluator.partition(":")
        opts = dict(self.evaluator_options)
        if arg:
            opts.setdefault("path", arg)
        return name, opts

    def objectives(self) -> Objectives:
        """The objectives and constraints of the run."""
        return Objectives.from_config({"objective": self.objective, "constraints": self.constraints})

    @property
    def executor_name(self) -> str:
        return self.executor or ("process" if self.workers > 1 else "local")

    @property
    def batch_size(self) -> int:
        return self.batch or self.workers

    def cap_workers(self) -> None:
        """Cap the workers of a process pool (or of a local Ray cluster) at the cores and the trial
        budget, noting it in ``notes``.

        Trials are still asked in batches of the requested size (``batch``), so the results do
        not depend on the machine's core count.
        """
        on_this_machine = self.executor_name == "process" or (
            self.executor_name == "ray" and not self.executor_options.get("address"))
        if not on_this_machine:  # a Ray cluster's size is its own
            return
        limits = {"CPU cores available": available_cores()}
        if self.budget is not None:
            limits["trials in the budget"] = self.budget
        reason, cap = min(limits.items(), key=lambda kv: kv[1])
        if self.workers <= cap:
            return
        requested = self.workers
        if self.batch is None:
            self.batch = requested if self.budget is None else min(requested, self.budget)
        self.workers = cap
        self._notes.append(f"workers {requested} capped at {cap} (the {reason}); trials are "
                           f"still asked in batches of {self.batch_size}")

    @property
    def notes(self) -> list[str]:
        """One-line remarks on how the config was adjusted (printed by the CLI)."""
        return list(self._notes)

    def check_components(self) -> None:
        """Validate every component's options against its constructor (before any work).

        Number texts where a component expects a number (``1e-3`` from YAML) are kept as the
        numbers they are (``registry.read_numbers``), so the saved config holds numbers.
        """
        components = {"task_options": ("tasks", self.task), "space_options": ("spaces", self.space),
                      "strategy_options": ("strategies", self.strategy),
                      "evaluator_options": ("evaluators", self.evaluator_name_and_options()[0]),
                      "method_options": ("methods", self.method),
                      "executor_options": ("executors", self.executor_name)}
        for key, (kind, name) in components.items():
            given = getattr(self, key)  # space_options None: the main job's narrowing
            read = given if given is None else registry.read_options(kind, name, given)
            if read != given:  # assigned only then: the fields a file or flag set stay the same
                setattr(self, key, read)
        registry.validate_options("tasks", self.task, self.task_options)
        registry.validate_options("spaces", self.space, self.resolved_space_options())
        registry.validate_options("strategies", self.strategy, self.strategy_options)
        name, opts = self.evaluator_name_and_options()
        registry.validate_options("evaluators", name, opts)
        registry.validate_options("methods", self.method, self.method_options)
        # an executor's constructor only checks its options (and that its package is installed):
        # made here, a bad value is refused before a run directory exists
        registry.create("executors", self.executor_name, workers=self.workers,
                        **self.executor_options)

    def resolved(self) -> dict[str, Any]:
        """The config with defaults filled in, as saved in ``config.yaml``."""
        d = self.model_dump()
        d["space_options"] = self.resolved_space_options()
        d["executor"] = self.executor_name
        d["batch"] = self.batch_size
        return d


def _format_errors(exc: pydantic.ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        value = err.get("input")
        if err["type"] == "extra_forbidden":
            allowed = ", ".join(RunConfig.model_fields)
            lines.append(f"unknown key {key!r} (value {value!r}); allowed keys: {allowed}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{key} = {value!r}: {msg}")
    return f"invalid config in {source}: " + "; ".join(lines)  # one line, however many


def make_config(data: dict[str, Any], source: str = "config") -> RunConfig:
    """Validate a dict as a RunConfig, with messages naming key, value and what is allowed."""
    data, problems = dict(data), []
    for key, value in data.items():  # 5E1 from YAML is a number where one is expected
        if isinstance(key, str) and key in RunConfig.model_fields:
            try:
                data[key] = registry.read_numbers(value, RunConfig.model_fields[key].annotation)
            except ValueError as exc:
                problems.append(f"{key} = {value!r}: {exc}")
    if problems:
        raise ConfigError(f"invalid config in {source}: " + "; ".join(problems))
    try:
        cfg = RunConfig(**data)
    except pydantic.ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None
    except ConfigError as exc:
        raise ConfigError(f"invalid config in {source}: {exc}") from None
    cfg.check_components()
    cfg.cap_workers()
    return cfg


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a YAML config (if given) and apply overrides (CLI flags win over the file)."""
    data: dict[str, Any] = {}
    source = "command-line flags"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} " + ("is a directory; expected a YAML file"
                                                            if p.is_dir() else "does not exist"))
        loaded = _read_yaml(p)
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(p)!r} must hold a mapping of keys to values, "
                              f"got {type(loaded).__name__}")
        data.update(loaded)
        source = str(p)
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return make_config(data, source)


MAX_CONFIG_BYTES = 256 << 10  # a config is a few hundred bytes; anything this large is not one
MAX_CONFIG_NESTING = 64  # PyYAML slows down quadratically on deep nesting, then recurses too far


def _flow_depth(text: str) -> int:
    """Deepest nesting of YAML flow collections (``[`` / ``{``), ignoring quoted text."""
    depth = deepest = 0
    quote = ""
    for ch in text:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth = max(0, depth - 1)
        elif ch == "\n":
            quote = ""
    return deepest


def _read_yaml(p: Path) -> Any:
    """A YAML file's content; ConfigError for unreadable, binary, non-UTF-8 or invalid YAML."""
    try:
        with open(p, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(p)!r}: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {str(p)!r} is larger than {MAX_CONFIG_BYTES:,} bytes; "
                          "expected a short YAML file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {str(p)!r} is not UTF-8 text (byte 0x{raw[exc.start]:02x} "
                          f"at offset {exc.start}); expected a YAML file") from None
    if "\x00" in text:
        raise ConfigError(f"config file {str(p)!r} is not UTF-8 text (it holds NUL bytes); "
                          "expected a YAML file")
    if _flow_depth(text) > MAX_CONFIG_NESTING:
        raise ConfigError(f"config file {str(p)!r} nests lists or mappings more than "
                          f"{MAX_CONFIG_NESTING} deep; expected a flat YAML mapping of keys to values")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = " ".join(str(exc).split())
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {problem}") from None
    except RecursionError:
        raise ConfigError(f"config file {str(p)!r} nests too deeply; expected a flat YAML "
                          "mapping of keys to values") from None
