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

Numbers written with an exponent but without a dot or sign in it (``1e-3``, ``3.0e1``, ``5E4``)
are text to PyYAML, which follows YAML 1.1; where an option expects a number (its annotation, or
for an unannotated parameter its int or float default) ``read_numbers`` reads such text as the
number YAML 1.2 means, and text that is no number is refused naming the option and the value.
So are ``nan``, ``inf`` and ``-inf`` (text, or YAML's ``.nan``/``.inf``): a number option must be
finite, except that an option whose default is infinite (``math.inf``) also accepts ``inf`` and
``-inf``.
"""

from __future__ import annotations

import collections.abc
import importlib
import inspect
import math
import re
import types
import typing
import warnings
from decimal import Decimal
from typing import Any, Callable, NoReturn

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


# a decimal number as YAML 1.2 writes it (PyYAML's YAML 1.1 misses 1e-3, 3.0e1 and 5E4)
_NUMBER_TEXT = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_SEQUENCES = (list, tuple, set, frozenset, collections.abc.Sequence, collections.abc.Set)


def _members(annotation: Any) -> list[Any]:
    """The types a (possibly Optional/Union/Annotated) annotation accepts."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return [m for arg in typing.get_args(annotation) for m in _members(arg)]
    if origin is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    return [annotation]


def _expected(wants_float: bool, infinite: bool) -> str:
    if not wants_float:
        return "expected an integer (e.g. 50000 or 5e4)"
    if infinite:
        return "expected a number (e.g. 0.001, 1e-3 or inf); nan is no number"
    return "expected a finite number (e.g. 0.001 or 1e-3)"


def read_numbers(value: Any, annotation: Any, infinite: bool = False) -> Any:
    """``value`` with number texts read as numbers where ``annotation`` expects a number.

    Text is read only where the annotation accepts int or float but not text; an int-only
    annotation gets an int when the number is whole. Lists, tuples and dicts are followed into
    their items. Text for an annotation that accepts only numbers (and None) that is no number
    raises ``ValueError`` with what was expected; anything else is left to validation.
    ``true``/``false`` where only a number is expected raise ``ValueError`` (validation would
    read them as 1 and 0). ``nan``, ``inf`` and ``-inf`` (as text, or as YAML's ``.nan``/``.inf``) where a number is
    expected raise ``ValueError`` too; ``infinite`` (an option whose default is infinite) lets
    ``inf`` and ``-inf`` through, never ``nan``.
    """
    members = _members(annotation)
    wants_int, wants_float = int in members, float in members
    if isinstance(value, bool) and (wants_int or wants_float) and bool not in members \
            and Any not in members and set(members) <= {int, float, type(None)}:
        # validation would read true as 1 and false as 0
        raise ValueError(f"expected {'a number' if wants_float else 'an integer'}, got "
                         f"{str(value).lower()}")
    if isinstance(value, float) and not math.isfinite(value) and (wants_int or wants_float) \
            and Any not in members:
        if infinite and wants_float and not math.isnan(value):
            return value
        raise ValueError(_expected(wants_float, infinite))
    if isinstance(value, str):
        if not (wants_int or wants_float) or str in members or Any in members:
            return value
        text = value.strip()
        if _NUMBER_TEXT.fullmatch(text):
            number = Decimal(text)
            whole = number == number.to_integral_value() and number.adjusted() < 1000
            if wants_int and whole:
                return int(number)
            if not wants_float:
                raise ValueError("expected an integer, got a number with a fractional part")
            if not math.isfinite(float(text)):  # 1e400: too large for a float
                if infinite and wants_float:
                    return float(text)
                raise ValueError(_expected(wants_float, infinite))
            return float(text)
        try:
            number_read = float(text)  # 1_000: validation reads it as before
        except ValueError:
            if set(members) <= {int, float, type(None)}:
                raise ValueError("expected an integer (e.g. 50000 or 5e4)" if not wants_float
                                 else "expected a number (e.g. 0.001 or 1e-3)") from None
            return value
        if not math.isfinite(number_read):  # nan, inf, -inf, infinity
            if infinite and wants_float and not math.isnan(number_read):
                return number_read
            raise ValueError(_expected(wants_float, infinite))
        return value
    if isinstance(value, (list, tuple)):
        for member in members:
            origin, args = typing.get_origin(member), typing.get_args(member)
            if origin is tuple and args and args[-1] is not Ellipsis and len(args) == len(value):
                return type(value)(read_numbers(v, a) for v, a in zip(value, args))
            if isinstance(origin, type) and issubclass(origin, _SEQUENCES) and args:
                return type(value)(read_numbers(v, args[0]) for v in value)
        return value
    if isinstance(value, dict):
        for member in members:
            origin, args = typing.get_origin(member), typing.get_args(member)
            if isinstance(origin, type) and issubclass(origin, collections.abc.Mapping) \
                    and len(args) == 2:
                return {k: read_numbers(v, args[1]) for k, v in value.items()}
    return value


def option_model(obj: Any) -> type[pydantic.BaseModel]:
    """A pydantic model of the keyword options a component's constructor accepts.

    An unannotated parameter with an int or float default expects a number (or None).
    """
    target = obj.__init__ if inspect.isclass(obj) else obj
    fields: dict[str, Any] = {}
    for pname, param in inspect.signature(target).parameters.items():
        if pname in ("self", "cls") or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        annotation = param.annotation if param.annotation is not inspect.Parameter.empty else Any
        if annotation is Any and isinstance(param.default, (int, float)) \
                and not isinstance(param.default, bool):
            annotation = int | float | None
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


def _refuse(kind: str, name: str, model: type[pydantic.BaseModel], problems: list[str]) -> NoReturn:
    allowed = ", ".join(model.model_fields) or "(none)"
    raise ConfigError(f"{kind[:-1] if kind != 'strategies' else 'strategy'} {name!r}: "
                      + "; ".join(problems) + f". Allowed options: {allowed}")


def _infinite(default: Any) -> bool:
    """An option whose default is inf or -inf accepts inf and -inf (never nan)."""
    return isinstance(default, float) and math.isinf(default)


def _read_options(kind: str, name: str, model: type[pydantic.BaseModel],
                  options: dict[str, Any]) -> dict[str, Any]:
    out, problems = dict(options), []
    for key, value in options.items():
        if key in model.model_fields:
            field = model.model_fields[key]
            try:
                out[key] = read_numbers(value, field.annotation, _infinite(field.default))
            except ValueError as exc:
                problems.append(f"option {key!r} = {value!r}: {exc}")
    if problems:
        _refuse(kind, name, model, problems)
    return out


def read_options(kind: str, name: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """``options`` with number texts read as numbers where the component expects numbers
    (``read_numbers``); other values unchanged. ConfigError for text that is no number."""
    return _read_options(kind, name, option_model(get(kind, name)), dict(options or {}))


def validate_options(kind: str, name: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """Check ``options`` against the component's signature; return them with types coerced."""
    model = option_model(get(kind, name))
    options = _read_options(kind, name, model, dict(options or {}))
    try:
        validated = model(**options)
    except pydantic.ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown option {key!r} (value {err.get('input')!r})")
            else:
                problems.append(f"option {key!r} = {err.get('input')!r}: {err['msg']}")
        _refuse(kind, name, model, problems)
    return {k: getattr(validated, k) for k in options}


def create(kind: str, name: str, /, **options: Any) -> Any:
    """Instantiate a registered component by name with validated options."""
    obj = get(kind, name)
    return obj(**validate_options(kind, name, options))
