"""Regularized (aging) evolution (Real et al., AAAI 2019).

The first ``population_size`` asks are random samples. After that each child is
``space.mutate(parent)``, where the parent is the best of ``sample_size`` members drawn at random
(without replacement) from the population; every successful evaluation joins the population and,
once it holds more than ``population_size`` members, the oldest one dies. Failed trials never
join, so they are never parents.

Defaults (P=20, S=5) suit budgets of a hundred to a few thousand evaluations; the NAS-Bench-201
paper ran REA with P=10, S=3, and Real et al. used P=100, S=25 for 20,000 trained models.

Several objectives (NSGA-II's ranking, Deb et al. 2002): members are compared by the crowded
comparison over the current population (lower Pareto rank first, then larger crowding
distance, then the older member), both in the tournament and, with ``removal="crowding"`` (the
default for several objectives), when the population is full: the member of the worst rank
with the smallest crowding distance dies (the oldest of those on a tie) instead of the oldest. ``removal="oldest"`` keeps aging with several objectives.
Trials that break a constraint never join the population.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Literal, Sequence

from ..core import Architecture, Strategy, Trial
from ..errors import ConfigError
from ..pareto import crowded_order, rank_and_crowding
from ..registry import register

Score = float | tuple[float, ...]


@register("strategies", "evolution")
class RegularizedEvolution(Strategy):
    """Aging evolution: tournament selection, one mutation per child, the oldest member dies."""

    name = "evolution"

    def __init__(self, *, seed: int = 0, population_size: int = 20, sample_size: int = 5,
                 removal: Literal["auto", "oldest", "crowding"] = "auto"):
        super().__init__(seed=seed)
        if removal not in ("auto", "oldest", "crowding"):
            raise ConfigError(f"evolution: removal={removal!r}; expected 'auto', 'oldest' or "
                              "'crowding'")
        self.removal = removal
        if population_size < 1:
            raise ConfigError(f"evolution: population_size={population_size}; expected >= 1")
        if not 1 <= sample_size <= population_size:
            raise ConfigError(f"evolution: sample_size={sample_size}; expected 1..population_size "
                              f"({population_size})")
        self.population_size = population_size
        self.sample_size = sample_size
        self.population: deque[tuple[Architecture, Score]] = deque()  # oldest first
        self.asked = 0
        self.told = 0
        self.failed = 0

    def ask(self, n: int = 1) -> list[Architecture]:
        space = self._require_space()
        out = []
        for _ in range(n):
            if self.asked < self.population_size or not self.population:
                out.append(space.sample(self.rng))
            else:
                out.append(space.mutate(self._select(), self.rng))
            self.asked += 1
        return out

    def _select(self) -> Architecture:
        """The best of ``sample_size`` members drawn without replacement (first one on ties);
        with several objectives, the first of them in the crowded-comparison order."""
        k = min(self.sample_size, len(self.population))
        picks = self.rng.choice(len(self.population), size=k, replace=False)
        if self.objectives.multi:
            position = {m: p for p, m in enumerate(crowded_order([s for _, s in self.population]))}
            best = min(picks, key=lambda i: position[int(i)])
        else:
            best = max(picks, key=lambda i: (self.population[i][1], -i))
        return self.population[int(best)][0]

    def _score(self, trial: Trial) -> Score | None:
        """The scalar reward (one objective) or the score vector (several); None: never a parent."""
        return self.objectives.scores(trial.result) if self.objectives.multi else self.reward(trial)

    def tell(self, trials: Sequence[Trial]) -> None:
        for t in trials:
            self.told += 1
            score = self._score(t)
            if score is None:
                self.failed += 1
                continue
            self.population.append((t.arch, score))
            while len(self.population) > self.population_size:
                if self._removal() == "crowding":
                    rank, crowd = rank_and_crowding([s for _, s in self.population])
                    worst = min(range(len(rank)), key=lambda i: (-rank[i], crowd[i], i))
                    del self.population[worst]
                else:
                    self.population.popleft()

    def _removal(self) -> str:
        if self.removal == "auto":
            return "crowding" if self.objectives.multi else "oldest"
        return self.removal

    def info(self) -> dict[str, Any]:
        phase = "random" if self.asked < self.population_size or not self.population else "mutation"
        return {"phase": phase, "population": len(self.population)}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(),
                "population": [[str(a), list(s) if isinstance(s, tuple) else s]
                               for a, s in self.population],
                "asked": self.asked, "told": self.told, "failed": self.failed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self._defer_until_setup(state):
            return
        super().load_state_dict(state)
        space = self.space
        self.population = deque(
            (space.parse(text), tuple(map(float, s)) if isinstance(s, (list, tuple)) else float(s))
            for text, s in state["population"])
        self.asked, self.told, self.failed = state["asked"], state["told"], state["failed"]
