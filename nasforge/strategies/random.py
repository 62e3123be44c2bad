"""Random search: the baseline every NAS result must beat (Li & Talwalkar 2019)."""

from __future__ import annotations

from typing import Any, Sequence

from ..core import Architecture, Strategy, Trial
from ..errors import ConfigError
from ..registry import register


@register("strategies", "random")
class RandomSearch(Strategy):
    """Uniform samples from the space; with ``dedupe`` an architecture is asked at most once.

    ``dedupe`` gives up after ``max_tries`` samples in a row that were all seen before (a tiny or
    exhausted space) and then returns a repeat rather than looping forever.
    """

    name = "random"

    def __init__(self, *, seed: int = 0, dedupe: bool = True, max_tries: int = 100):
        super().__init__(seed=seed)
        if max_tries < 1:
            raise ConfigError(f"random: max_tries={max_tries}; expected an integer >= 1")
        self.dedupe = dedupe
        self.max_tries = max_tries
        self.seen: set[str] = set()
        self._seen_order: list[str] = []  # insertion order, so state_dict is deterministic

    def ask(self, n: int = 1) -> list[Architecture]:
        space = self._require_space()
        out = []
        for _ in range(n):
            arch = space.sample(self.rng)
            if self.dedupe:
                for _ in range(self.max_tries - 1):
                    if str(arch) not in self.seen:
                        break
                    arch = space.sample(self.rng)
            self._remember(str(arch))
            out.append(arch)
        return out

    def tell(self, trials: Sequence[Trial]) -> None:
        for t in trials:  # trials asked elsewhere (e.g. re-told after a resume) count as seen
            self._remember(str(t.arch))

    def _remember(self, text: str) -> None:
        if text not in self.seen:
            self.seen.add(text)
            self._seen_order.append(text)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "seen": list(self._seen_order)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._seen_order = list(state.get("seen", []))
        self.seen = set(self._seen_order)
