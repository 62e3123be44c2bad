"""Methods: what drives a run (``multitrial``, ``sequential_halving``, one-shot methods ...).

See ``base.py`` for the contract and ``docs/methods.md`` for how a new method plugs in.
"""

from .base import Method, MethodContext, run_method

__all__ = ["Method", "MethodContext", "run_method"]
