"""The config of a run: a pydantic model, loaded from YAML and/or CLI flags, saved with the run.

Unknown keys, wrong types and unknown component names are refused with the key, the value and
what is allowed. Component options (``space_options`` ...) are checked against the component's
constructor. Nothing in a config is imported or evaluated as code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

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
DEMO_BUDGET = 90
# The main job trades accuracy against size: on digits validation accuracy saturates after a few
# trials, so the Pareto front (what each extra parameter buys) says more than a leaderboard.
DEMO_OBJECTIVES = ["max:val_acc", "min:params"]


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
    executor: Literal["local", "process"] | None = None  # None: process when workers > 1
    batch: int | None = Field(default=None, ge=1)  # trials asked at once; None: = workers
    seed: int = 0
    keep_trials: bool = False
    method: str = "multitrial"  # what drives the run (nasforge.methods)
    method_options: dict[str, Any] = Field(default_factory=dict)

    @pydantic.field_validator("task", "space", "strategy", "evaluator", "method")
    @classmethod
    def _known_component(cls, v: str, info: pydantic.ValidationInfo) -> str:
        kind = {"task": "tasks", "space": "spaces", "strategy": "strategies",
                "evaluator": "evaluators", "method": "methods"}[info.field_name]
        registry.get(kind, v.split(":", 1)[0] if kind == "evaluators" else v)
        return v

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

    def check_components(self) -> None:
        """Validate every component's options against its constructor (before any work)."""
        registry.validate_options("tasks", self.task, self.task_options)
        registry.validate_options("spaces", self.space, self.resolved_space_options())
        registry.validate_options("strategies", self.strategy, self.strategy_options)
        name, opts = self.evaluator_name_and_options()
        registry.validate_options("evaluators", name, opts)
        registry.validate_options("methods", self.method, self.method_options)

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
    return f"invalid config in {source}:\n  " + "\n  ".join(lines)


def make_config(data: dict[str, Any], source: str = "config") -> RunConfig:
    """Validate a dict as a RunConfig, with messages naming key, value and what is allowed."""
    try:
        cfg = RunConfig(**data)
    except pydantic.ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None
    except ConfigError as exc:
        raise ConfigError(f"invalid config in {source}: {exc}") from None
    cfg.check_components()
    return cfg


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a YAML config (if given) and apply overrides (CLI flags win over the file)."""
    data: dict[str, Any] = {}
    source = "command-line flags"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(p)!r} must hold a mapping of keys to values, "
                              f"got {type(loaded).__name__}")
        data.update(loaded)
        source = str(p)
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return make_config(data, source)
