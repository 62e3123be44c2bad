"""Method ``multitrial``: the ask -> evaluate -> tell loop (``nasforge.run.loop.Search``).

The default method. Each trial is an architecture the strategy asked for, trained by the
evaluator; the strategy is told every result. Options:

- ``mode: async`` (default): a new trial starts as soon as a worker is free and the strategy is
  told each trial as it finishes. With ``workers: 1`` it is the same as ``batch``. With N > 1
  workers the order of tells depends on timing, so proposals after the first N may differ
  between runs with the same seed (each trial's result still depends only on its architecture
  and seed).
- ``mode: batch``: ask ``batch`` trials (default: ``workers``), wait for all, tell them in the
  order asked: reproducible whatever the timing, for comparisons between strategies.

Checkpoints: after every tell (step = trials told), under the name ``multitrial``.
Budget: ``trials`` counts the trials asked; ``seconds`` and ``cost`` stop asking new ones (the
trials in flight finish and are recorded).
Repeats: the run option ``repeats`` (``evaluate`` / ``reuse``) applies to the loop; a reused
trial counts as a trial of the budget (``docs/methods.md``).
"""

from __future__ import annotations

from typing import Literal

from ..core import Trial
from ..registry import register
from .base import Method, MethodContext


@register("methods", "multitrial")
class MultiTrial(Method):
    """Today's search loop: the strategy asks, the evaluator scores, the strategy is told."""

    name = "multitrial"
    uses_strategy = True

    def __init__(self, mode: Literal["async", "batch"] = "async"):
        self.mode = mode

    def run(self, ctx: MethodContext) -> list[Trial]:
        return ctx.search(mode=self.mode).run(ctx.budget)
