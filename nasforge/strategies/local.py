"""Local search with restarts (White et al., "Local search is state of the art for NAS benchmarks").

Start from a random architecture; evaluate its neighbours (all one-edit neighbours when the space
lists them with ``neighbours(arch)``, otherwise ``max_neighbours`` distinct ``space.mutate``
results), in random order; when the neighbourhood is done, move to the best neighbour if it beats
the current architecture, else restart from a new random one. Scores are remembered, so an
architecture is never evaluated twice while its score is known.

Asks are answered one at a time: when the neighbourhood is exhausted while some of its trials are
still running (``ask(n)`` with ``n > 1``), the move is decided on the results told so far.

Several objectives (Pareto acceptance): a neighbour is accepted only if it dominates the current
architecture; among those, and among random starts, the first in NSGA-II's crowded-comparison
order (lower Pareto rank, larger crowding distance, earlier) is chosen. Dominance is a strict
order, so moves never cycle. Trials that break a constraint count as failed.
"""

from __future__ import annotations

from typing import Any, Sequence

from ..core import Architecture, Strategy, Trial
from ..errors import ConfigError
from ..pareto import crowded_order, dominates
from ..registry import register

Score = float | tuple[float, ...]


@register("strategies", "local")
class LocalSearch(Strategy):
    """Best-improvement hill climbing over one-edit neighbourhoods, restarting when stuck."""

    name = "local"

    def __init__(self, *, seed: int = 0, max_neighbours: int | None = None, mutations: int = 20):
        super().__init__(seed=seed)
        if max_neighbours is not None and max_neighbours < 1:
            raise ConfigError(f"local: max_neighbours={max_neighbours}; expected >= 1 or None (all)")
        if mutations < 1:
            raise ConfigError(f"local: mutations={mutations}; expected >= 1")
        self.max_neighbours = max_neighbours  # cap on neighbours per step (None: all listed)
        self.mutations = mutations  # neighbours drawn by mutate() when the space cannot list them
        self.scores: dict[str, Score | None] = {}  # every told arch text -> score (None: failed)
        self.current: str | None = None
        self.starts: list[str] = []  # random starts asked since the last restart
        self.neighbourhood: list[str] = []  # neighbours of current
        self.queue: list[str] = []  # neighbours still to ask
        self.moves = 0
        self.restarts = 0
        self._archs: dict[str, Architecture] = {}

    # -- asking ---------------------------------------------------------------------------------
    def ask(self, n: int = 1) -> list[Architecture]:
        self._require_space()
        return [self._next() for _ in range(n)]

    def _next(self) -> Architecture:
        space = self._require_space()
        while True:
            if self.current is None:
                best_start = self._best_of(self.starts)
                if best_start is None:
                    return self._start(space.sample(self.rng))
                self._move_to(best_start)
            elif self.queue:
                text = self.queue.pop(0)
                if text not in self.scores:
                    return self._archs[text]
            else:  # neighbourhood done: move to its best neighbour, or restart if none is better
                best = self._best_neighbour()
                if best is not None:
                    self.moves += 1
                    self._move_to(best)
                else:
                    self.restarts += 1
                    self.current, self.starts, self.neighbourhood = None, [], []

    def _start(self, arch: Architecture) -> Architecture:
        self._archs[str(arch)] = arch
        self.starts.append(str(arch))
        return arch

    def _best_of(self, texts: Sequence[str]) -> str | None:
        """The best scored text (the earlier on ties; crowded order with several objectives)."""
        scored = [s for s in texts if self.scores.get(s) is not None]
        if not scored:
            return None
        if self.objectives.multi:
            return scored[crowded_order([self.scores[s] for s in scored])[0]]  # type: ignore[misc]
        return max(((self.scores[s], -i, s) for i, s in enumerate(scored)))[2]  # type: ignore[type-var]

    def _best_neighbour(self) -> str | None:
        """The best neighbour that improves on (several objectives: dominates) the current one."""
        here = self.scores[self.current]  # type: ignore[index]
        if self.objectives.multi:
            better = [s for s in self.neighbourhood if self.scores.get(s) is not None
                      and dominates(self.scores[s], here)]  # type: ignore[arg-type]
        else:
            better = [s for s in self.neighbourhood if self.scores.get(s) is not None
                      and self.scores[s] > here]  # type: ignore[operator]
        return self._best_of(better)

    def _move_to(self, text: str) -> None:
        """Make ``text`` the current architecture and queue its (shuffled) neighbourhood."""
        space = self._require_space()
        arch = self._arch(text)
        self.current, self.starts = text, []
        listed = space.neighbours(arch)
        if listed is not None:
            for a in listed:
                self._archs.setdefault(str(a), a)
            found = [str(listed[i]) for i in self.rng.permutation(len(listed))]
        else:
            found = []
            for _ in range(self.mutations * 5):
                child = space.mutate(arch, self.rng)
                if str(child) != text and str(child) not in found:
                    found.append(str(child))
                    self._archs.setdefault(str(child), child)
                if len(found) >= self.mutations:
                    break
        if self.max_neighbours is not None:
            found = found[:self.max_neighbours]
        self.neighbourhood = found
        self.queue = [s for s in found if s not in self.scores]
        self._archs = {s: a for s, a in self._archs.items() if s in self.queue}  # keep it small

    def _arch(self, text: str) -> Architecture:
        arch = self._archs.get(text)
        return arch if arch is not None else self._require_space().parse(text)

    # -- telling --------------------------------------------------------------------------------
    def tell(self, trials: Sequence[Trial]) -> None:
        for t in trials:
            score = self.objectives.scores(t.result) if self.objectives.multi else self.reward(t)
            text = str(t.arch)
            if score is not None or text not in self.scores:  # a later success beats a failure
                self.scores[text] = score

    def info(self) -> dict[str, Any]:
        return {"moves": self.moves, "restarts": self.restarts}

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(),
                "scores": [[k, list(v) if isinstance(v, tuple) else v] for k, v in self.scores.items()],
                "current": self.current, "starts": list(self.starts),
                "neighbourhood": list(self.neighbourhood), "queue": list(self.queue),
                "moves": self.moves, "restarts": self.restarts}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self._defer_until_setup(state):  # parse texts once the space is known
            return
        super().load_state_dict(state)
        self.scores = {k: (None if v is None else tuple(map(float, v)) if isinstance(v, (list, tuple))
                           else float(v)) for k, v in state["scores"]}
        self.current = state["current"]
        self.starts = list(state["starts"])
        self.neighbourhood = list(state["neighbourhood"])
        self.queue = list(state["queue"])
        self.moves, self.restarts = state["moves"], state["restarts"]
        self._archs = {s: self.space.parse(s) for s in set(self.queue) | set(self.starts)}
