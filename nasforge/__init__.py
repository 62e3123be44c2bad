"""nasforge: neural architecture search with one set of interfaces.

Any search space, explored by any strategy, scored by any evaluator, in a crash-safe run.
"""

from __future__ import annotations

from .core import (Architecture, Constraint, Evaluator, Network, Objective, Objectives,
                   SearchSpace, Strategy, Task, Trial, TrialResult, pareto_front)
from .data import load_task
from .errors import ArchitectureError, ConfigError, DataError, NasforgeError, RunError
from .registry import available, create, get, register

__version__ = "0.1.0"

__all__ = [
    "Architecture", "Evaluator", "Network", "Objective", "Objectives", "Constraint",
    "SearchSpace", "Strategy", "Task",
    "Trial", "TrialResult", "pareto_front", "load_task", "available", "create", "get", "register",
    "NasforgeError", "ConfigError", "DataError", "ArchitectureError", "RunError", "__version__",
]
