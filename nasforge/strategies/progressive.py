"""Progressive cell search: PNAS (Liu et al., ECCV 2018) and POPNAS (Falanti et al., POPNASv3).

The search grows cells one block at a time on a space with ``first_cells()`` and
``expand(cell)`` (the ``cell`` space):

1. **Step 1** asks every 1-block cell (or ``first_step`` of them drawn at random). In
   ``popnas`` mode the empty cell ``[]`` is asked first (POPNAS's time baseline).
2. **Step b = 2..B**: the accuracy predictor (``predictor``: ``lstm`` for ``pnas``, ``gin`` for
   ``popnas``) is fitted from scratch on the first objective (``val_acc``, oriented so larger
   is better) of every successful trial told so far; every cell asked at
   step b-1 is expanded by one block (``space.expand``), equivalent candidates are merged
   (``space.canonical_key``, the first kept) and each is scored.

   - ``pnas``: the ``beam`` (K) candidates with the highest predicted accuracy are asked.
   - ``popnas``: the time predictor (``time_predictor``, ``svr`` on POPNASv3's nine hand features
     of the cell) is fitted on the measured training time (``time_metric``, the ``train``
     evaluator's ``train_seconds``) and the asked cells are the Pareto front of (predicted
     accuracy, predicted time): candidates are walked by predicted accuracy, best first, and one
     is kept when no kept candidate has a predicted accuracy at least as high and a predicted
     time at least as low (weak dominance), up to K. Before the last step, the **exploration**
     step adds up to ``exploration`` cells that use the inputs and operators the front uses
     least (POPNASv3's rule, see ``docs/progressive.md``); those are trained and expanded too.
     The operators' time scores for the features come from step 1: ``|t(-1,op,-1,op) -
     t([])| / max`` (POPNASv3's dynamic reindex).

3. After step B the remaining budget asks the next-ranked candidates of the last step, then
   random unseen cells.

The run loop decides the budget; a step ends when its cells are all asked, and the next step
fits on what has been told by then (all of the previous step with ``batch`` or sequential
evaluation; with asynchronous workers, the trials still running are left out of that fit).

State: the step, the queue of the step's cells not yet asked, the cells to expand, every told
score and time, the asked keys, the ranking left over and the random state. Predictors are
refitted from scratch at each step with seeds derived from the strategy's seed, so a resumed
search asks exactly what the uninterrupted one would have.
"""

from __future__ import annotations

import csv
import inspect
import math
from collections import Counter
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

from .. import registry
from ..core import Architecture, Objective, Objectives, SearchSpace, Strategy, Trial, derive_seed
from ..errors import ConfigError
from ..registry import register
from .bananas import one_thread

MODES = ("pnas", "popnas")

#: predictor options used unless ``predictor_options`` says otherwise
DEFAULT_PREDICTOR_OPTIONS: dict[str, dict[str, Any]] = {
    # POPNASv3's GIN training: 5-model ensemble, 80 epochs, batch 16, AdamW lr 0.005, wd 5e-4
    "gin": {"members": 5, "epochs": 80, "batch_size": 16, "lr": 0.005, "weight_decay": 5e-4},
    # PNAS: an ensemble of 5 LSTMs with 100 hidden units over 100-wide token embeddings, Adam
    # at lr 0.01 for 20 epochs (our reading of the paper; see docs/progressive.md)
    "lstm": {"members": 5, "hidden": 100, "embed": 100, "lr": 0.01, "epochs": 20},
}


def _positive(name: str, value: Any, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"progressive: {name} = {value!r}; expected an integer >= {low}")
    return value


@register("strategies", "progressive")
class Progressive(Strategy):
    """PNAS / POPNAS progressive search over a space with ``first_cells`` and ``expand``.

    Options (POPNASv3's defaults): ``mode`` (``popnas`` or ``pnas``), ``beam`` (K, 128:
    POPNASv3's ``max_children``; the PNAS paper used 256), ``exploration`` (16: POPNASv3's
    ``max_exploration_children``; popnas only, 0 turns it off), ``first_step`` (None: all 1-block
    cells), ``empty_cell`` (None: on for popnas), ``predictor`` / ``predictor_options``,
    ``time_predictor`` / ``time_predictor_options``, ``time_metric`` and ``max_candidates``
    (None: score every expansion; a number draws that many at random per step).
    """

    name = "progressive"

    def __init__(self, *, seed: int = 0, mode: Literal["pnas", "popnas"] = "popnas",
                 beam: int = 128, exploration: int = 16, first_step: int | None = None,
                 empty_cell: bool | None = None, predictor: str | None = None,
                 predictor_options: dict[str, Any] | None = None, time_predictor: str = "svr",
                 time_predictor_options: dict[str, Any] | None = None,
                 time_metric: str = "train_seconds", max_candidates: int | None = None):
        super().__init__(seed=seed)
        if mode not in MODES:
            raise ConfigError(f"progressive: mode = {mode!r}; expected 'pnas' or 'popnas'")
        self.mode = mode
        self.beam = _positive("beam", beam)
        self.exploration = _positive("exploration", exploration, 0) if mode == "popnas" else 0
        self.first_step = None if first_step is None else _positive("first_step", first_step)
        self.max_candidates = None if max_candidates is None else _positive("max_candidates",
                                                                           max_candidates)
        self.empty_cell = (mode == "popnas") if empty_cell is None else bool(empty_cell)
        self.predictor = predictor or ("lstm" if mode == "pnas" else "gin")
        self.time_predictor = time_predictor
        for kind_name in (self.predictor, self.time_predictor):
            registry.get("predictors", kind_name)  # unknown names fail here, with the list
        opts = dict(DEFAULT_PREDICTOR_OPTIONS.get(self.predictor, {}))
        opts.update(predictor_options or {})
        self.predictor_options = opts
        self.time_predictor_options = dict(time_predictor_options or {})
        for name, kind_name, options in (("predictor", self.predictor, self.predictor_options),
                                         ("time_predictor", self.time_predictor,
                                          self.time_predictor_options)):
            try:
                registry.validate_options("predictors", kind_name, {"seed": 0, **options})
            except ConfigError as exc:
                raise ConfigError(f"progressive: {name}_options: {exc}") from None
        if not isinstance(time_metric, str) or not time_metric:
            raise ConfigError(f"progressive: time_metric = {time_metric!r}; expected a metric "
                              "or cost name such as 'train_seconds'")
        self.time_metric = time_metric
        # search state
        self.step = 0  # blocks of the cells being asked (0: not started)
        self.queue: list[str] = []  # this step's cells not asked yet
        self.roles: dict[str, str] = {}  # text -> role (step1, top-k, pareto, exploration, ...)
        self.parents: list[str] = []  # cells asked at this step (expanded at the next)
        self.results: dict[str, tuple[float | None, float | None]] = {}  # text -> (score, time)
        self.asked: list[str] = []
        self._asked_keys: set[str] = set()
        self.rest: list[str] = []  # the last step's ranking beyond what was asked
        self.op_scores: dict[str, float] | None = None
        self.selected: list[dict[str, Any]] = []  # every step's chosen cells with predictions
        self.fits = 0

    # -- setup ------------------------------------------------------------------------------------
    def setup(self, space: SearchSpace, objective: Objective | Objectives, *,
              budget: int | None = None) -> None:
        if not (callable(getattr(space, "expand", None))
                and callable(getattr(space, "first_cells", None))):
            raise ConfigError(f"strategy progressive grows cells block by block and needs a "
                              f"space with first_cells() and expand(cell), such as 'cell'; "
                              f"space {space.name!r} has none")
        self.blocks = int(getattr(space, "B", 5))
        super().setup(space, objective, budget=budget)  # last: it loads a deferred state

    # -- ask / tell -------------------------------------------------------------------------------
    def ask(self, n: int = 1) -> list[Architecture]:
        space = self._require_space()
        out = []
        for _ in range(n):
            self._fill()
            text = self.queue.pop(0)
            arch = space.parse(text)
            self._remember(arch)
            out.append(arch)
        return out

    def _fill(self) -> None:
        """Prepare the next cells to ask: start, advance a step or go past the last one."""
        while not self.queue:
            if self.step == 0:
                self._start()
            elif self.step < self.blocks:
                self._advance()
            else:
                self._extra()

    def tell(self, trials: Sequence[Trial]) -> None:
        for t in trials:
            self._remember(t.arch)
            self.results[str(t.arch)] = (self.objective.score(t.result), self._time(t))

    def info(self) -> dict[str, Any]:
        """The step and role of the cell the next ``ask`` returns (a run records it with that
        trial); preparing it may start the next step, as that ask would."""
        if self.space is None:
            return {"step": self.step, "role": "none"}
        self._fill()
        return {"step": self.step, "role": self.roles.get(self.queue[0], "extra")}

    def _time(self, trial: Trial) -> float | None:
        r = trial.result
        if r.status != "ok":
            return None
        v = r.cost.get(self.time_metric, r.metrics.get(self.time_metric))
        try:
            v = float(v)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None
        return v if math.isfinite(v) and v >= 0 else None

    def _key(self, arch: Architecture) -> str:
        return self._require_space().canonical_key(arch)

    def _remember(self, arch: Architecture) -> None:
        key = self._key(arch)
        if key not in self._asked_keys:
            self._asked_keys.add(key)
            self.asked.append(str(arch))

    # -- steps ------------------------------------------------------------------------------------
    def _start(self) -> None:
        space = self._require_space()
        cells = space.first_cells()  # type: ignore[attr-defined]
        if self.first_step is not None and self.first_step < len(cells):
            pick = np.sort(self.rng.choice(len(cells), size=self.first_step, replace=False))
            cells = [cells[int(i)] for i in pick]
        texts = [str(c) for c in cells]
        self.step = 1
        self.parents = list(texts)
        self.queue = (["[]"] if self.empty_cell else []) + texts
        self.roles = {t: "step1" for t in texts}
        if self.empty_cell:
            self.roles["[]"] = "empty"
        self.selected += [{"step": 1, "role": self.roles[t], "cell": t, "predicted_score": None,
                           "predicted_time": None} for t in self.queue]

    def _training_data(self, which: int) -> tuple[list[Architecture], list[float]]:
        space = self._require_space()
        archs, ys = [], []
        for text, values in self.results.items():
            v = values[which]
            if v is not None and math.isfinite(v):
                archs.append(space.parse(text))
                ys.append(float(v))
        return archs, ys

    def _fit_predict(self, name: str, options: dict[str, Any], which: int,
                     candidates: list[Architecture], salt: int) -> np.ndarray | None:
        """Fit predictor ``name`` on the told values (0: score, 1: time); its predictions of
        ``candidates``, or None when the data cannot support a fit."""
        archs, ys = self._training_data(which)
        pred_cls = registry.get("predictors", name)
        if len(archs) < max(2, getattr(pred_cls, "min_fit", 2)) or len(set(ys)) < 2:
            return None
        opts = dict(options)
        if which == 1 and self.op_scores is not None \
                and "op_scores" in inspect.signature(pred_cls.__init__).parameters:
            opts.setdefault("op_scores", self.op_scores)
        model = registry.create("predictors", name, seed=derive_seed(self.seed, self.step, salt),
                                **opts)
        with one_thread():
            model.fit(archs, ys, self._require_space())
            self.fits += 1
            return np.asarray(model.predict(candidates), dtype=np.float64)

    def _candidates(self) -> list[Architecture]:
        space = self._require_space()
        out, seen = [], set()
        for text in self.parents:
            for child in space.expand(space.parse(text)):  # type: ignore[attr-defined]
                key = self._key(child)
                if key in seen or key in self._asked_keys:
                    continue
                seen.add(key)
                out.append(child)
        if self.max_candidates is not None and len(out) > self.max_candidates:
            pick = np.sort(self.rng.choice(len(out), size=self.max_candidates, replace=False))
            out = [out[int(i)] for i in pick]
        return out

    def _advance(self) -> None:
        if self.step == 1 and self.mode == "popnas":
            self.op_scores = self._reindex()
        candidates = self._candidates()
        self.step += 1
        if not candidates:  # nothing left to grow (every expansion asked): go on at random
            self.parents, self.queue, self.rest = [], [], []
            self.step = self.blocks
            return
        acc = self._fit_predict(self.predictor, self.predictor_options, 0, candidates, 0)
        if acc is None:  # too few successful trials to learn from: a random order
            acc = self.rng.random(len(candidates))
        times = None
        if self.mode == "popnas":
            times = self._fit_predict(self.time_predictor, self.time_predictor_options, 1,
                                      candidates, 1)
        order = sorted(range(len(candidates)),
                       key=lambda i: (-acc[i], times[i] if times is not None else 0.0, i))
        if times is None:
            chosen = order[:self.beam]
            roles = {i: "top-k" for i in chosen}
        else:
            chosen = pareto_walk(order, acc, times, self.beam)
            roles = {i: "pareto" for i in chosen}
            if self.exploration and self.step < self.blocks:
                extra = self._explore(candidates, order, acc, times, set(chosen))
                roles.update({i: "exploration" for i in extra})
                chosen = chosen + extra
        texts = [str(candidates[i]) for i in chosen]
        self.queue = list(texts)
        self.parents = list(texts)
        self.roles = {str(candidates[i]): roles[i] for i in chosen}
        taken = set(chosen)
        self.rest = [str(candidates[i]) for i in order if i not in taken]
        self.selected += [{"step": self.step, "role": roles[i], "cell": str(candidates[i]),
                           "predicted_score": float(acc[i]),
                           "predicted_time": None if times is None else float(times[i])}
                          for i in chosen]

    def _extra(self) -> None:
        """After the last step: the next-ranked candidates of that step, then random cells."""
        space = self._require_space()
        while self.rest:
            text = self.rest.pop(0)
            if self._key(space.parse(text)) not in self._asked_keys:
                self.queue.append(text)
                self.roles[text] = "next-ranked"
                return
        arch = space.sample(self.rng)
        for _ in range(99):
            if self._key(arch) not in self._asked_keys:
                break
            arch = space.sample(self.rng)
        self.queue.append(str(arch))
        self.roles[str(arch)] = "random"

    # -- POPNAS pieces ----------------------------------------------------------------------------
    def _reindex(self) -> dict[str, float] | None:
        """Each operator's time score from step 1: ``|t(-1,op,-1,op) - t([])|``, divided by the
        largest; operators without a measurement get the mean of the others."""
        space = self._require_space()
        base = self.results.get("[]", (None, None))[1] or 0.0
        raw = {}
        for op in getattr(space, "operators", ()):
            t = self.results.get(f"[(-1, {op}, -1, {op})]", (None, None))[1]
            if t is not None:
                raw[op] = abs(t - base)
        if not raw:
            return None
        top = max(raw.values()) or 1.0
        scores = {op: v / top for op, v in raw.items()}
        mean = float(np.mean(list(scores.values())))
        return {op: scores.get(op, mean) for op in getattr(space, "operators", ())}

    def _explore(self, candidates: list[Architecture], order: list[int], acc: np.ndarray,
                 times: np.ndarray, front: set[int]) -> list[int]:
        """POPNASv3's exploration step: up to ``exploration`` candidates rich in the inputs and
        operators the Pareto front uses least (scored on every block, op2 included)."""
        space = self._require_space()
        inputs = list(space.allowed_inputs(self.step - 1))  # type: ignore[attr-defined]
        ops = list(getattr(space, "operators", ()))
        in_count = Counter({i: 0 for i in inputs})
        op_count = Counter({o: 0 for o in ops})
        for i in front:
            for in1, op1, in2, op2 in candidates[i].blocks:  # type: ignore[attr-defined]
                in_count.update([in1, in2])
                op_count.update([op1, op2])
        in_total, op_total = sum(in_count.values()), sum(op_count.values())
        in_exp = {i for i in inputs if in_count[i] < in_total / (len(inputs) * 5)}
        op_exp = {o for o in ops if op_count[o] < op_total / (len(ops) * 5)}
        if not in_exp and not op_exp:
            return []
        exp_in = Counter({i: 0 for i in in_exp})
        exp_op = Counter({o: 0 for o in op_exp})
        threshold = 8 if in_exp and op_exp else 4

        def element(el: Any, counter: Counter, total: int, bonus: bool) -> int:
            if el not in counter:
                return 0
            s = 1
            if total == 0 or counter[el] <= total / len(counter):
                s += 2
            return s + (1 if bonus else 0)

        def eligible(cell: Architecture) -> bool:
            ti, to = sum(exp_in.values()), sum(exp_op.values())
            score = 0
            for in1, op1, in2, op2 in cell.blocks:  # type: ignore[attr-defined]
                score += element(in1, exp_in, ti, ti <= to) + element(in2, exp_in, ti, ti <= to)
                score += element(op1, exp_op, to, to <= ti) + element(op2, exp_op, to, to <= ti)
            return score >= threshold

        picked: list[int] = []
        keys = {self._key(candidates[i]) for i in front}
        for i in order:
            if len(picked) >= self.exploration:
                break
            if i in front or self._key(candidates[i]) in keys or not eligible(candidates[i]):
                continue
            if picked and any(acc[j] >= acc[i] and times[j] <= times[i] for j in picked):
                continue
            picked.append(i)
            keys.add(self._key(candidates[i]))
            for in1, op1, in2, op2 in candidates[i].blocks:  # type: ignore[attr-defined]
                exp_in.update([v for v in (in1, in2) if v in exp_in])
                exp_op.update([v for v in (op1, op2) if v in exp_op])
        return picked

    # -- files ------------------------------------------------------------------------------------
    def write_csv(self, directory: str | Path) -> None:
        """``progressive.csv``: every step's chosen cells, their role and predictions."""
        path = Path(directory) / "progressive.csv"
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, ["step", "role", "cell", "predicted_score", "predicted_time"])
            w.writeheader()
            w.writerows(self.selected)
        tmp.replace(path)

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "step": self.step, "queue": list(self.queue),
                "roles": dict(self.roles), "parents": list(self.parents),
                "results": [[t, s, tm] for t, (s, tm) in self.results.items()],
                "asked": list(self.asked), "rest": list(self.rest),
                "op_scores": None if self.op_scores is None else dict(self.op_scores),
                "selected": [dict(r) for r in self.selected], "fits": self.fits}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self._defer_until_setup(state):
            return
        super().load_state_dict(state)
        space = self.space
        self.step = int(state["step"])
        self.queue = list(state["queue"])
        self.roles = dict(state["roles"])
        self.parents = list(state["parents"])
        self.results = {t: (None if s is None else float(s), None if tm is None else float(tm))
                        for t, s, tm in state["results"]}
        self.asked = list(state["asked"])
        self._asked_keys = {space.canonical_key(space.parse(t)) for t in self.asked}
        self.rest = list(state["rest"])
        self.op_scores = None if state["op_scores"] is None else dict(state["op_scores"])
        self.selected = [dict(r) for r in state["selected"]]
        self.fits = int(state["fits"])


def pareto_walk(order: Sequence[int], acc: Sequence[float], times: Sequence[float],
                limit: int) -> list[int]:
    """POPNASv3's Pareto front: walk ``order`` (best predicted accuracy first) and keep an index
    unless a kept one has accuracy >= and time <= (weak dominance); at most ``limit``."""
    kept: list[int] = []
    for i in order:
        if len(kept) >= limit:
            break
        if any(acc[j] >= acc[i] and times[j] <= times[i] for j in kept):
            continue
        kept.append(i)
    return kept


__all__ = ["Progressive", "pareto_walk", "DEFAULT_PREDICTOR_OPTIONS"]
