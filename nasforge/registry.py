"""Name registries: configs and the CLI pick spaces, strategies, evaluators, tasks, executors
and methods by name.

Built-in components are listed here by module path and imported only when first asked for, so
``import nasforge`` stays light (no Ray, ONNX or aeon at import time). Users register their own
with the decorator::

    from nasforge.registry import register

    @register("strategies", "my_search")
    class MySearch(Strategy): ...

``create(kind, name, **options)`` validates the options against the component's constructor
signature (unknown keys and wrong types are refused with the key, the value and what is allowed).
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from typing import Any, Callable

import pydantic

from .errors import ConfigError

KINDS = ("spaces", "strategies", "evaluators", "tasks", "executors", "methods", "predictors")

# name -> module that registers it on import (lazy; keeps heavy optional imports out of startup)
_BUILTIN: dict[str, dict[str, str]] = {
    "spaces": {
        "chain": "nasforge.spaces.chain",
        "nb201": "nasforge.spaces.nb201",
        "darts": "nasforge.spaces.darts",
        "enas_macro": "nasforge.spaces.enas_macro",
        "enas_rnn": "nasforge.spaces.enas_rnn",
        "cell": "nasforge.spaces.cell",
    },
    "strategies": {
        "random": "nasforge.strategies.random",
        "evolution": "nasforge.strategies.evolution",
        "local": "nasforge.strategies.local",
        "reinforce": "nasforge.strategies.reinforce",
        "qlearning": "nasforge.strategies.qlearning",
        "optuna": "nasforge.strategies.optuna",
        "bananas": "nasforge.strategies.bananas",
        "predictor_evolution": "nasforge.strategies.bananas",
        "progressive": "nasforge.strategies.progressive",
    },
    "evaluators": {
        "train": "nasforge.evaluators.train",
        "deep_prior": "nasforge.evaluators.deep_prior",
        "table": "nasforge.evaluators.table",
        "zc": "nasforge.evaluators.zero_cost",
        "ghn": "nasforge.evaluators.ghn",
    },
    "tasks": {
        "digits": "nasforge.data.builtin",
        "mnist1d": "nasforge.data.builtin",
        "mnist": "nasforge.data.builtin",
        "fashion-mnist": "nasforge.data.builtin",
        "cifar10": "nasforge.data.builtin",
        "cifar100": "nasforge.data.builtin",
        "arrays": "nasforge.data.builtin",
        "ptb": "nasforge.data.ptb",
        "ucr": "nasforge.data.ucr",
    },
    "executors": {
        "local": "nasforge.run.executors",
        "process": "nasforge.run.executors",
        "ray": "nasforge.run.ray_executor",
    },
    "methods": {
        "multitrial": "nasforge.methods.multitrial",
        "sequential_halving": "nasforge.methods.halving",
        "enas": "nasforge.methods.enas",
        "darts": "nasforge.oneshot.darts",
        "gdas": "nasforge.oneshot.darts",
        "ghn_search": "nasforge.methods.ghn_search",
        "ghn": "nasforge.methods.ghn",
        "darts_cc": "nasforge.methods.darts_cc",
    },
    "predictors": {
        "mlp_ensemble": "nasforge.predictors.neural",
        "gin": "nasforge.predictors.neural",
        "svr": "nasforge.predictors.classic",
        "gp": "nasforge.predictors.classic",
        "gbt": "nasforge.predictors.classic",
        "params": "nasforge.predictors.classic",
        "flops": "nasforge.predictors.classic",
        "mlp_batched": "nasforge.predictors.batched",
        "lstm": "nasforge.predictors.sequence",
    },
}

_REGISTRY: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}


def _check_kind(kind: str) -> None:
    if kind not in _REGISTRY:
        raise ConfigError(f"unknown registry kind {kind!r}; expected one of {', '.join(KINDS)}")


def register(kind: str, name: str) -> Callable[[Any], Any]:
    """Class or function decorator that makes a component available under ``name``."""
    _check_kind(kind)

    def decorator(obj: Any) -> Any:
        existing = _REGISTRY[kind].get(name)
        if existing is not None and existing is not obj and _qualname(existing) != _qualname(obj):
            warnings.warn(f"{kind} {name!r} is registered again; the new one replaces {existing!r}",
                          stacklevel=2)
        _REGISTRY[kind][name] = obj
        return obj

    return decorator


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', repr(obj))}"


def available(kind: str) -> list[str]:
    """All names of a kind, built-in and user-registered, sorted."""
    _check_kind(kind)
    return sorted(set(_BUILTIN.get(kind, {})) | set(_REGISTRY[kind]))


def get(kind: str, name: str) -> Any:
    """The registered class or factory for ``name``; imports a built-in module on first use."""
    _check_kind(kind)
    if name not in _REGISTRY[kind] and name in _BUILTIN.get(kind, {}):
        module = _BUILTIN[kind][name]
        try:
            importlib.import_module(module)
        except ImportError as exc:
            if exc.name and exc.name.startswith("nasforge"):
                raise
            raise ConfigError(f"{kind[:-1]} {name!r} needs the package {exc.name!r}, which is not "
                              f"installed (pip install {exc.name})") from None
    try:
        return _REGISTRY[kind][name]
    except KeyError:
        singular = kind[:-1] if not kind.endswith("ies") else kind[:-3] + "y"
        raise ConfigError(
            f"unknown {singular} {name!r}; available: {', '.join(available(kind))}"
        ) from None


def option_model(obj: Any) -> type[pydantic.BaseModel]:
    """A pydantic model of the keyword options a component's constructor accepts."""
    target = obj.__init__ if inspect.isclass(obj) else obj
    fields: dict[str, Any] = {}
    for pname, param in inspect.signature(target).parameters.items():
        if pname in ("self", "cls") or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        annotation = param.annotation if param.annotation is not inspect.Parameter.empty else Any
        if isinstance(annotation, str):  # postponed annotations: resolve them in the module
            try:
                hints = inspect.get_annotations(target, eval_str=True)
                annotation = hints.get(pname, Any)
            except Exception:
                annotation = Any
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[pname] = (annotation, default)
    return pydantic.create_model(  # type: ignore[call-overload]
        f"{getattr(obj, '__name__', 'Component')}Options",
        __config__=pydantic.ConfigDict(extra="forbid", arbitrary_types_allowed=True),
        **fields,
    )


def validate_options(kind: str, name: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """Check ``options`` against the component's signature; return them with types coerced."""
    obj = get(kind, name)
    options = dict(options or {})
    model = option_model(obj)
    try:
        validated = model(**options)
    except pydantic.ValidationError as exc:
        allowed = ", ".join(model.model_fields) or "(none)"
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown option {key!r} (value {err.get('input')!r})")
            else:
                problems.append(f"option {key!r} = {err.get('input')!r}: {err['msg']}")
        raise ConfigError(
            f"{kind[:-1] if kind != 'strategies' else 'strategy'} {name!r}: " + "; ".join(problems)
            + f". Allowed options: {allowed}"
        ) from None
    return {k: getattr(validated, k) for k in options}


def create(kind: str, name: str, /, **options: Any) -> Any:
    """Instantiate a registered component by name with validated options."""
    obj = get(kind, name)
    return obj(**validate_options(kind, name, options))
