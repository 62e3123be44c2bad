"""Tasks (datasets ready for training), found by name in the ``tasks`` registry.

``load_task("digits")`` gives scikit-learn's 8x8 digits, the embedded default. Loaders for
MNIST-1D, MNIST / Fashion-MNIST IDX files, CIFAR python batches and ``.npz`` arrays live in
``nasforge.data.builtin``, the UCR / UEA time-series archives (``ucr``) in
``nasforge.data.ucr``; users register their own with ``@register("tasks", name)`` on a function
``(seed: int = 0, **options) -> Task`` (``nasforge.data.prep.make_task`` does the split, the
limit and the normalisation the built-in loaders do). Built-in loaders take the split from their
``split_seed`` option (default 0), not from the run ``seed``, so every run of a task is
validated and tested on the same examples.
"""

from __future__ import annotations

from typing import Any

from .. import registry
from ..core import Task


def load_task(name: str, /, *, seed: int = 0, **options: Any) -> Task:
    """Load a task by registered name. ``seed`` is the run's seed; the built-in loaders split by
    their ``split_seed`` option instead, so the split is the same for every run seed. ``name`` is
    positional-only, so a task may take an option called ``name`` (``ucr`` does)."""
    loader = registry.get("tasks", name)
    opts = registry.validate_options("tasks", name, options)
    return loader(seed=seed, **opts)


def __getattr__(name: str) -> Any:
    """Re-export the IDX reader/writer lazily (keeps ``import nasforge`` light)."""
    if name in ("read_idx", "write_idx"):
        from . import formats

        return getattr(formats, name)
    if name == "default_data_dir":
        from .builtin import default_data_dir

        return default_data_dir
    raise AttributeError(name)


__all__ = ["load_task", "Task", "read_idx", "write_idx", "default_data_dir"]
