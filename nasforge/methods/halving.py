"""Method ``sequential_halving``: search, then re-evaluate the best trials with more budget.

Small-budget evaluations (few epochs) rank architectures noisily; successive halving (Jamieson
& Talwalkar 2016; Li et al.'s Hyperband uses it as its inner loop) spends more on the few that
look best. Here:

1. **Search phase** (rung 0): the ``multitrial`` loop with the run's strategy, evaluator and
   budget, exactly as ``method: multitrial`` would run it (same trials, same seeds, same
   checkpoints): trials ``0 .. budget-1``.
2. **Rungs** 1, 2, ...: the ``top_k`` best distinct architectures of the search (by the
   objective; ties broken by fewer parameters, then earlier trial) are evaluated again with the
   evaluator's ``resource`` option (default ``epochs``) multiplied by ``eta`` per rung; the best
   ``1/eta`` of each rung (by that rung's results) go on to the next, until one is left (or
   ``rungs`` rungs were run). Each re-evaluation is a trial of its own, with ``info``
   ``{"method": "sequential_halving", "rung": r, "source_trial": id in the search,
   "previous_trial": id in rung r-1, RESOURCE: value}``. The method's answer is the best trial
   of the last rung; the store's metadata ``sequential_halving`` names it (``selected_trial``).

Rung trials run on the executor's workers in parallel. The method checkpoints (under its name)
at the start of each rung and after every finished trial; trial ids and seeds are fixed by the
checkpoint, so after ``kill -9`` a resumed run reuses every finished trial, re-runs only the
unfinished ones, and ends equal to an uninterrupted run.

Budget: the run's budget (trials, time, cost) is the search phase's; the rungs come on top:
with ``top_k`` k and ``eta`` 2, about ``k * log2(k)`` evaluations of 2x, 4x, ... the resource.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

from .. import registry
from ..core import Objectives, Trial, evaluated
from ..errors import ConfigError, RunError
from ..registry import register
from .base import Method, MethodContext


@register("methods", "sequential_halving")
class SequentialHalving(Method):
    """Multi-trial search, then successive halving of its ``top_k`` with ``eta``x the resource."""

    name = "sequential_halving"
    uses_strategy = True

    def __init__(self, top_k: int = 4, eta: int = 2, rungs: int | None = None,
                 resource: str = "epochs", mode: Literal["async", "batch"] = "async"):
        if not isinstance(top_k, int) or top_k < 1:
            raise ConfigError(f"sequential_halving: top_k = {top_k!r}; expected an integer >= 1")
        if not isinstance(eta, int) or eta < 2:
            raise ConfigError(f"sequential_halving: eta = {eta!r}; expected an integer >= 2")
        if rungs is not None and (not isinstance(rungs, int) or rungs < 1):
            raise ConfigError(f"sequential_halving: rungs = {rungs!r}; expected None or an "
                              "integer >= 1")
        self.top_k, self.eta, self.rungs, self.resource, self.mode = top_k, eta, rungs, resource, mode

    # -- helpers ----------------------------------------------------------------------------------
    def base_resource(self, ctx: MethodContext) -> float:
        """The search phase's value of the evaluator's ``resource`` option."""
        if ctx.evaluator_name is None:
            raise RunError("sequential_halving needs the evaluator's registry name")
        if self.resource in ctx.evaluator_options:
            value = ctx.evaluator_options[self.resource]
        else:
            target = registry.get("evaluators", ctx.evaluator_name)
            params = inspect.signature(target.__init__ if inspect.isclass(target) else target).parameters
            if self.resource not in params:
                allowed = ", ".join(p for p in params if p != "self")
                raise ConfigError(f"sequential_halving: evaluator {ctx.evaluator_name!r} has no "
                                  f"option {self.resource!r} to scale; set method option "
                                  f"resource to one of: {allowed}")
            value = params[self.resource].default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(f"sequential_halving: evaluator option {self.resource} = {value!r} "
                              "cannot be scaled; expected a positive number")
        return value

    def rung_value(self, base: float, rung: int) -> float:
        value = base * self.eta ** rung
        return int(round(value)) if isinstance(base, int) else float(value)

    def rank(self, ctx: MethodContext, trials: list[Trial]) -> list[Trial]:
        """Feasible ok trials best first, by the run's chosen-trial rule (objective, then fewer
        parameters, then the earlier trial; Pareto rank first with several objectives)."""
        return Objectives.of(ctx.objective).ranked(sorted(trials, key=lambda t: t.id))

    # -- the method -------------------------------------------------------------------------------
    def run(self, ctx: MethodContext) -> list[Trial]:
        base = self.base_resource(ctx)  # refuse an evaluator without the resource before work
        loaded = ctx.load_state()
        if loaded is None:
            search = ctx.search(mode=self.mode)
            found = search.run(ctx.budget)
            first = self.rank(ctx, evaluated(found))  # a reused result is not a second candidate
            seen: set[str] = set()
            candidates: list[int] = []
            for t in first:
                if str(t.arch) not in seen and len(candidates) < self.top_k:
                    seen.add(str(t.arch))
                    candidates.append(t.id)
            state: dict[str, Any] = {"step": 0, "rung": 1, "next_id": ctx.next_id(),
                                     "candidates": candidates, "sources": candidates,
                                     "previous": [None] * len(candidates), "done": False}
            ctx.save_state(0, state)
        else:
            state = loaded[1]
        stored = ctx.stored()
        while not state["done"]:
            rung, candidates = state["rung"], state["candidates"]
            if not candidates or (self.rungs is not None and rung > self.rungs):
                state = {**state, "done": True, "step": state["step"] + 1}
                ctx.save_state(state["step"], state)
                break
            value = self.rung_value(base, rung)
            evaluator = ctx.make_evaluator(**{self.resource: value})
            start = state["next_id"]
            proposals = []
            for i, (cid, src, prev) in enumerate(zip(candidates, state["sources"], state["previous"])):
                info = {"method": self.name, "rung": rung, "source_trial": src,
                        "previous_trial": prev, self.resource: value}
                proposals.append((start + i, stored[cid].arch, info))

            def checkpoint(trial: Trial) -> None:
                state["step"] += 1
                ctx.save_state(state["step"], state)

            results = ctx.evaluate(proposals, evaluator=evaluator, on_done=checkpoint)
            stored = ctx.stored()
            ranked = self.rank(ctx, results)
            keep = [] if len(results) == 1 else ranked[:max(1, len(results) // self.eta)]
            by_id = {t.id: (src, t.id) for t, src in zip(results, state["sources"])}
            state = {"step": state["step"] + 1, "rung": rung + 1,
                     "next_id": start + len(proposals),
                     "candidates": [t.id for t in keep],
                     "sources": [by_id[t.id][0] for t in keep],
                     "previous": [t.id for t in keep],
                     "done": len(keep) == 0, "winner": ranked[0].id if ranked else None}
            ctx.save_state(state["step"], state)
        ctx.store.set_meta(self.name, {"selected_trial": state.get("winner"),
                                       "rungs_run": state["rung"] - 1, "resource": self.resource})
        return sorted(ctx.trials, key=lambda t: t.id)
