"""Method ``ghn_search``: rank many candidates by the accuracy of GHN-predicted parameters, then
train only the best few (GHN-2's use for architecture search, Knyazev et al. 2021, Sec. 5).

1. **Rank**: ``candidates`` distinct architectures sampled from the space (a generator seeded
   from the run seed) are scored by the ``ghn`` evaluator (predicted parameters, no training)
   on the executor's workers; each is a trial with ``info`` ``{"method": "ghn_search", "phase":
   "rank"}`` and metrics named ``ghn_val_acc``, ``ghn_test_acc``, ... (so they never compete
   with trained accuracy for the run's best trial).
2. **Train**: the ``top_k`` candidates with the highest ``ghn_val_acc`` (ties: fewer parameters,
   then the earlier trial; with ``bn_draws`` > 1 or ``train_images`` > 0, passed to the ``ghn``
   evaluator: the highest ``ghn_score``, ties by lower ``ghn_score_loss``) are evaluated with the run's evaluator (e.g. ``train``), each a trial
   with ``info`` ``{"phase": "train", "ghn_trial": id, "ghn_rank": r}``. The run's best trial is
   the best of these; the store's metadata ``ghn_search`` names it (``selected_trial``).

``nasforge search --method ghn_search -o method.ghn=ghn.pt -o method.candidates=200
-o method.top_k=10 --evaluator train`` is the one-command GHN-guided search. The run's budget is
not used: ``candidates`` and ``top_k`` fix the work. Trial ids are fixed by the first
checkpoint, so a resumed run reuses every finished trial and runs only the missing ones.
"""

from __future__ import annotations

from typing import Any

from ..core import Trial
from ..errors import ConfigError, RunError
from ..evaluators.ghn import GhnEvaluator, load_ghn
from ..registry import register
from .base import Method, MethodContext


@register("methods", "ghn_search")
class GhnSearch(Method):
    """Rank ``candidates`` architectures with a GHN, train the ``top_k`` best (module docstring)."""

    name = "ghn_search"

    def __init__(self, ghn: str = "", candidates: int = 200, top_k: int = 10, bn_batches: int = 4,
                 batch_size: int = 64, bn_draws: int = 1, train_images: int = 0):
        if not ghn:
            raise ConfigError("ghn_search: option ghn (the path of a GHN file) is required, e.g. "
                              "-o method.ghn=runs/ghn/ghn.pt")
        for key, value in (("candidates", candidates), ("top_k", top_k)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"ghn_search: {key} = {value!r}; expected an integer >= 1")
        if top_k > candidates:
            raise ConfigError(f"ghn_search: top_k = {top_k} is more than candidates = {candidates}")
        self.ghn, self.candidates, self.top_k = str(ghn), candidates, top_k
        self.bn_batches, self.batch_size = bn_batches, batch_size
        self._ranker = GhnEvaluator(ghn=self.ghn, bn_batches=bn_batches, batch_size=batch_size,
                                    metric_prefix="ghn_", bn_draws=bn_draws,
                                    train_images=train_images)
        self.bn_draws, self.train_images = bn_draws, train_images

    def sample(self, ctx: MethodContext) -> list[Any]:
        """``candidates`` distinct architectures (by text) from a generator seeded by the run."""
        rng = ctx.rng(0x6E)
        seen: dict[str, Any] = {}
        for _ in range(50 * self.candidates):
            arch = ctx.space.sample(rng)
            if ctx.task is not None:
                try:
                    ctx.space.check(arch, ctx.task)
                except Exception:
                    continue
            seen.setdefault(str(arch), arch)
            if len(seen) == self.candidates:
                break
        if len(seen) < self.candidates:
            raise ConfigError(f"ghn_search: only {len(seen)} distinct architectures found in "
                              f"{50 * self.candidates} samples; use fewer candidates")
        return list(seen.values())

    def run(self, ctx: MethodContext) -> list[Trial]:
        if ctx.task is None:
            raise RunError("ghn_search needs a task")
        load_ghn(self.ghn)  # refuse a missing file before any work
        loaded = ctx.load_state()
        if loaded is None:
            archs = self.sample(ctx)
            state: dict[str, Any] = {"archs": [str(a) for a in archs], "first_id": ctx.next_id()}
            ctx.save_state(0, state)
        else:
            state = loaded[1]
            archs = [ctx.space.parse(a) for a in state["archs"]]
        first = state["first_id"]
        ranked = ctx.evaluate([(first + i, a, {"method": self.name, "phase": "rank"})
                               for i, a in enumerate(archs)], evaluator=self._ranker)
        ok = [t for t in ranked if t.result.status == "ok" and "ghn_val_acc" in t.result.metrics]
        if self._ranker._scored():  # the steadier score, ties by its loss
            ok.sort(key=lambda t: (-t.result.metrics["ghn_score"], t.result.metrics["ghn_score_loss"],
                                   t.result.cost.get("params", 0.0), t.id))
        else:
            ok.sort(key=lambda t: (-t.result.metrics["ghn_val_acc"], t.result.cost.get("params", 0.0), t.id))
        top = ok[:self.top_k]
        second = first + len(archs)
        trained = ctx.evaluate([(second + r, t.arch, {"method": self.name, "phase": "train",
                                                      "ghn_trial": t.id, "ghn_rank": r,
                                                      "ghn_val_acc": t.result.metrics["ghn_val_acc"]})
                                for r, t in enumerate(top)])
        from ..core import best_trial

        best = best_trial(trained, ctx.objective)
        ctx.store.set_meta(self.name, {"selected_trial": None if best is None else best.id,
                                       "candidates": len(archs), "trained": len(trained),
                                       "failed_rank": len(ranked) - len(ok)})
        ctx.save_state(1, {**state, "done": True})
        return ranked + trained


__all__ = ["GhnSearch"]
