"""Small helpers for testing plug-ins: a toy sequential space and a functional evaluator.

They let strategies, stores and run loops be tested without training a network (as NNI tests
its strategies on a toy space). Both are importable by worker processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .core import Architecture, Evaluator, SearchSpace, Task, TrialResult
from .errors import ArchitectureError
from .graph import ArchGraph, chain_graph


@dataclass(frozen=True, eq=False)
class ToyArch(Architecture):
    values: tuple

    def __str__(self) -> str:
        return "-".join(str(v) for v in self.values)


class ToySpace(SearchSpace):
    """``length`` decisions in 0..width-1; after a leading 0 only even values (prefix-dependent)."""

    name = "toy"

    def __init__(self, length: int = 3, width: int = 5):
        self.length, self.width = length, width

    def parse(self, text: str) -> ToyArch:
        try:
            values = tuple(int(t) for t in text.split("-"))
        except ValueError:
            raise ArchitectureError(f"toy architecture {text!r}: expected integers joined by '-'") from None
        if len(values) != self.length:
            raise ArchitectureError(f"toy architecture {text!r}: expected {self.length} values")
        return ToyArch(values)

    def choices(self, prefix):
        if len(prefix) >= self.length:
            return []
        if len(prefix) == 1 and prefix[0] == 0:
            return list(range(0, self.width, 2))
        return list(range(self.width))

    def to_decisions(self, arch):
        return arch.values

    def from_decisions(self, decisions):
        return ToyArch(tuple(decisions))

    def build(self, arch, task):
        raise ArchitectureError("the toy space builds no networks")

    def check(self, arch, task) -> None:
        return None

    # features for learned models: one-hot of each value; the graph is a chain of values
    @property
    def encoding_size(self) -> int:
        return self.length * self.width

    def encode(self, arch) -> np.ndarray:
        out = np.zeros((self.length, self.width), dtype=np.float32)
        out[np.arange(self.length), list(arch.values)] = 1.0
        return out.reshape(-1)

    @property
    def op_vocab(self) -> tuple[str, ...]:
        return ("input", *(f"v{v}" for v in range(self.width)), "output")

    def graph(self, arch) -> ArchGraph:
        return chain_graph([f"v{v}" for v in arch.values],
                           [{"position": float(i)} for i in range(len(arch.values))])


def toy_score(arch: Any) -> float:
    """A deterministic stand-in for accuracy in [0, 1], larger for larger decisions."""
    text = str(arch)
    base = sum(int(v) for v in text.split("-")) / (4 * max(1, len(text.split("-"))))
    jitter = (zlib.crc32(text.encode()) % 1000) / 10_000
    return min(1.0, 0.9 * base + jitter)


class FunctionalEvaluator(Evaluator):
    """Scores an architecture with ``toy_score``; optional failures, delay and a model artifact."""

    name = "functional"
    needs_task = False  # scores the architecture's text only

    def __init__(self, fail_if_contains: str | None = None, delay: float = 0.0,
                 save_model: bool = False):
        self.fail_if_contains = fail_if_contains
        self.delay = delay
        self.save_model = save_model

    def evaluate(self, arch: Architecture, space: SearchSpace, task: Task | None, *, seed: int,
                 workdir: Path | None = None) -> TrialResult:
        if self.delay:
            time.sleep(self.delay)
        if self.fail_if_contains and self.fail_if_contains in str(arch):
            return TrialResult.failed(f"simulated failure for {arch}")
        value = toy_score(arch)
        result = TrialResult(metrics={"val_acc": value, "test_acc": value * 0.99, "seed": float(seed % 1000)},
                             cost={"params": 100.0 + len(str(arch)), "train_seconds": self.delay,
                                   "simulated_seconds": 10.0})
        if self.save_model and workdir is not None:
            path = Path(workdir) / "model.pt"
            torch.save({"w": torch.tensor([value])}, path)
            result.artifacts["model"] = str(path)
        return result


def run_cli(*args: str, cwd: Path, check: bool = True, timeout: float = 600,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m nasforge ARGS`` in a subprocess (headless plots, one OpenMP thread).

    With ``check`` a non-zero exit raises ``AssertionError`` carrying the command's output, so a
    failing CLI test shows what the user would have seen.
    """
    full_env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "nasforge", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"nasforge {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def main_in_process(*args: str) -> int:
    """Run the CLI's ``main`` in this process with ``args`` as its arguments; the exit status.

    Output goes to the current ``sys.stdout`` / ``sys.stderr`` (pytest's ``capsys`` captures it).
    """
    from . import cli

    argv = sys.argv
    sys.argv = ["nasforge", *args]
    try:
        cli.main()
        return 0
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
