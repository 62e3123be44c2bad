"""REINFORCE with an LSTM controller (Zoph & Le 2017; the controller of ENAS, Pham et al. 2018).

The controller emits an architecture one decision at a time through the space's sequential view:
at each step it scores every decision seen so far and samples among ``space.choices(prefix)``
only (invalid decisions are masked out). Decisions get vocabulary indices as they first appear,
so any space with a finite set of decision values works; ``vocab_size`` caps that set.

Training, on every ``tell``: the policy gradient ``-(R - b) log p(arch)`` with an exponential
moving-average baseline ``b``, minus ``entropy_weight`` times the policy entropy, plus
``memorization`` times the cross-entropy of a minibatch of past architectures (teaching the
controller to reproduce them, which makes its hidden state a usable architecture embedding, see
:meth:`ReinforceSearch.hidden_state`). Log-probabilities are recomputed by teacher forcing, so
trials told after a resume, or proposed by someone else, train the controller too.

ENAS's sampling options: ``temperature`` divides the logits, then ``tanh_constant`` (``c > 0``)
clips them to ``c * tanh(logits)``, so every logit lies in ``(-c, c)`` and no decision's
probability can collapse to 0 or 1 (ENAS: temperature 5, tanh constant 2.5; ``0`` turns the
clipping off). ``learn(archs, rewards)`` is the same update with rewards given directly (ENAS
trains its controller on shared-weight validation accuracy, not on recorded trials).

Several objectives: the reward ``R`` is the scalarisation ``Objectives.scalar``, a weighted sum
of the oriented objective scores with cost objectives (params, flops, latency_ms,
train_seconds) on a log10 scale, weight 1 for the first objective and 0.05 for each other
(with max:val_acc and min:params: ``R = val_acc - 0.05 * log10(params)``). Trials that break a
constraint are skipped like failed ones.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Literal, Sequence

import torch
from torch import nn

from ..core import Architecture, Decision, SearchSpace, Strategy, Trial
from ..errors import ConfigError
from ..registry import register

_MAX_STEPS = 10_000


class Controller(nn.Module):
    """An LSTM cell that reads the previous decision and scores the next one over the vocabulary."""

    def __init__(self, vocab_size: int, hidden_size: int, generator: torch.Generator):
        super().__init__()
        self.embed = nn.Embedding(vocab_size + 1, hidden_size)  # row 0 is the start token
        self.lstm = nn.LSTMCell(hidden_size, hidden_size)
        self.head = nn.Linear(hidden_size, vocab_size)
        with torch.no_grad():
            for p in self.parameters():
                nn.init.uniform_(p, -0.1, 0.1, generator=generator)

    def step(self, tokens: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """The new LSTM state after reading ``tokens`` (0: start, i + 1: decision i), batched."""
        return self.lstm(self.embed(tokens), state)


@register("strategies", "reinforce")
class ReinforceSearch(Strategy):
    """A REINFORCE-trained LSTM controller over the space's sequential decisions.

    ``reward_transform="cube"`` uses the cube of the score (``reward_scale`` x score), as the
    original NAS did with validation accuracy; ``normalize`` divides advantages by a moving
    estimate of the reward's std so that ``lr`` and ``entropy_weight`` do not depend on whether
    the metric is a fraction or a percentage. Failed trials are skipped (no reward, no update).
    """

    name = "reinforce"

    def __init__(self, *, seed: int = 0, hidden_size: int = 64, lr: float = 0.01,
                 entropy_weight: float = 0.2, baseline_decay: float = 0.9,
                 reward_transform: Literal["none", "cube"] = "none", reward_scale: float = 1.0,
                 normalize: bool = True, memorization: float = 0.0, buffer_size: int = 100,
                 memory_batch: int = 8, temperature: float = 1.0, tanh_constant: float = 0.0,
                 vocab_size: int = 1024):
        super().__init__(seed=seed)
        for key, value, ok, expected in (
                ("hidden_size", hidden_size, hidden_size >= 1, "an integer >= 1"),
                ("lr", lr, lr > 0, "> 0"),
                ("entropy_weight", entropy_weight, entropy_weight >= 0, ">= 0"),
                ("baseline_decay", baseline_decay, 0 <= baseline_decay < 1, "in [0, 1)"),
                ("memorization", memorization, memorization >= 0, ">= 0"),
                ("buffer_size", buffer_size, buffer_size >= 1, "an integer >= 1"),
                ("memory_batch", memory_batch, memory_batch >= 1, "an integer >= 1"),
                ("temperature", temperature, temperature > 0, "> 0"),
                ("tanh_constant", tanh_constant, tanh_constant >= 0, ">= 0 (0: no clipping)"),
                ("vocab_size", vocab_size, vocab_size >= 1, "an integer >= 1")):
            if not ok:
                raise ConfigError(f"reinforce: {key}={value!r}; expected {expected}")
        if reward_transform not in ("none", "cube"):
            raise ConfigError(f"reinforce: reward_transform={reward_transform!r}; expected 'none' or 'cube'")
        self.hidden_size, self.lr, self.entropy_weight = hidden_size, lr, entropy_weight
        self.baseline_decay, self.reward_transform = baseline_decay, reward_transform
        self.reward_scale, self.normalize, self.memorization = reward_scale, normalize, memorization
        self.memory_batch, self.temperature, self.vocab_size = memory_batch, temperature, vocab_size
        self.tanh_constant = tanh_constant
        self.generator = torch.Generator().manual_seed(seed)
        self.controller = Controller(vocab_size, hidden_size, self.generator)
        self.optimizer = torch.optim.Adam(self.controller.parameters(), lr=lr)
        self.vocab: list[Decision] = []
        self._index: dict[Decision, int] = {}
        self.baseline: float | None = None
        self.reward_var: float | None = None
        self.buffer: deque[str] = deque(maxlen=buffer_size)  # texts of past successful samples
        self.updates = 0

    # -- vocabulary -----------------------------------------------------------------------------
    def _ids(self, decisions: Sequence[Decision]) -> list[int]:
        out = []
        for d in decisions:
            i = self._index.get(d)
            if i is None:
                if len(self.vocab) >= self.vocab_size:
                    raise ConfigError(
                        f"reinforce: the space has more than vocab_size={self.vocab_size} distinct "
                        f"decisions (new one: {d!r}); raise the strategy option vocab_size")
                i = self._index[d] = len(self.vocab)
                self.vocab.append(d)
            out.append(i)
        return out

    # -- the policy ------------------------------------------------------------------------------
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores over the vocabulary from LSTM states: divided by ``temperature``, then clipped
        to ``tanh_constant * tanh(.)`` when ``tanh_constant > 0`` (before masking)."""
        logits = self.controller.head(hidden) / self.temperature
        if self.tanh_constant > 0:
            logits = self.tanh_constant * torch.tanh(logits)
        return logits

    def _rollout(self, space: SearchSpace, forced: Sequence[Sequence[Decision]] | None, n: int = 1,
                 trace: list[torch.Tensor] | None = None
                 ) -> tuple[list[list[Decision]], torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample ``n`` decision sequences, or follow the ``forced`` ones, as one batch.

        Returns the decisions, their log-probabilities and entropies (shape ``(n,)``) and the
        hidden states after reading each sequence's last decision (``(n, hidden_size)``).
        ``trace``, when given, receives each step's logits of the live rows (before masking).
        """
        if forced is not None:
            n = len(forced)
        hidden = torch.zeros(n, self.hidden_size)
        state = (hidden, hidden.clone())
        tokens = torch.zeros(n, dtype=torch.long)
        prefixes: list[list[Decision]] = [[] for _ in range(n)]
        live = torch.ones(n, dtype=torch.bool)
        logp, entropy = torch.zeros(n), torch.zeros(n)
        for step in range(_MAX_STEPS):
            h, c = self.controller.step(tokens, state)
            keep = live.clone()[:, None]  # live changes below; where() keeps its mask for backward
            state = (torch.where(keep, h, state[0]), torch.where(keep, c, state[1]))
            rows: list[int] = []
            options: dict[int, list[Decision]] = {}
            allowed: list[list[int]] = []
            for b in torch.nonzero(live).flatten().tolist():
                opts = space.choices(prefixes[b])
                if not opts:  # complete: its state has read the last decision
                    live[b] = False
                    if forced is not None and len(forced[b]) != step:
                        raise ConfigError(f"reinforce: {tuple(forced[b])!r} has {len(forced[b])} "
                                          f"decisions but {space.name} completes after {step}")
                    continue
                options[b] = opts
                allowed.append(self._ids(opts))
                rows.append(b)
            if not rows:
                return prefixes, logp, entropy, state[0]
            index = torch.tensor(rows)
            mask = torch.zeros(len(rows), self.vocab_size, dtype=torch.bool)
            for r, ids_r in enumerate(allowed):
                mask[r, ids_r] = True
            logits = self.logits(state[0][index])
            if trace is not None:
                trace.append(logits.detach())
            log_probs = torch.log_softmax(logits.masked_fill(~mask, -math.inf), dim=1)
            probs = log_probs.exp()
            if forced is None:
                ids = torch.multinomial(probs.detach(), 1, generator=self.generator).flatten().tolist()
            else:
                ids = []
                for b in rows:
                    if step >= len(forced[b]) or forced[b][step] not in options[b]:
                        raise ConfigError(f"reinforce: decision {step} of {tuple(forced[b])!r} is not "
                                          f"one of the space's choices {options[b]!r}")
                    ids.append(self._index[forced[b][step]])
            chosen = torch.tensor(ids)
            # masked entries have p = 0 and log p = -inf: zero them so gradients stay finite
            step_ent = -(probs * log_probs.masked_fill(~mask, 0.0)).sum(1)
            logp = logp.index_add(0, index, log_probs[torch.arange(len(rows)), chosen])
            entropy = entropy.index_add(0, index, step_ent)
            new_tokens = tokens.clone()
            for b, i in zip(rows, ids):
                prefixes[b].append(self.vocab[i])
                new_tokens[b] = i + 1
            tokens = new_tokens
        raise RuntimeError(f"{space.name}: sequential view did not terminate after {_MAX_STEPS} decisions")

    def ask(self, n: int = 1) -> list[Architecture]:
        space = self._require_space()
        with torch.no_grad():
            decisions = self._rollout(space, None, n)[0]
        return [space.from_decisions(d) for d in decisions]

    def hidden_state(self, arch: Architecture) -> torch.Tensor:
        """The controller's final LSTM hidden state after reading all decisions of ``arch``."""
        return self.hidden_states([arch])[0]

    def hidden_states(self, archs: Sequence[Architecture]) -> torch.Tensor:
        """Final hidden states of several architectures, ``(len(archs), hidden_size)``."""
        space = self._require_space()
        with torch.no_grad():
            return self._rollout(space, [space.to_decisions(a) for a in archs])[3].clone()

    def decision_logits(self, arch: Architecture) -> torch.Tensor:
        """The logits the controller gives at each decision of ``arch`` (teacher forcing),
        ``(decisions, vocab_size)``, after temperature and tanh clipping, before masking."""
        space = self._require_space()
        trace: list[torch.Tensor] = []
        with torch.no_grad():
            self._rollout(space, [space.to_decisions(arch)], trace=trace)
        return torch.cat(trace, 0)

    # -- learning ---------------------------------------------------------------------------------
    def _transform(self, score: float) -> float:
        r = self.reward_scale * score
        return r ** 3 if self.reward_transform == "cube" else r

    def tell(self, trials: Sequence[Trial]) -> None:
        scores = [self.reward(t) for t in trials]
        self.learn([t.arch for t in trials], scores)

    def learn(self, archs: Sequence[Architecture], scores: Sequence[float | None]) -> None:
        """One policy-gradient step on ``archs`` with their scores (larger is better; None or
        non-finite ones are skipped); the moving-average baseline and the memory follow."""
        space = self._require_space()
        sequences, advantages = [], []
        for arch, score in zip(archs, scores):
            reward = None if score is None else self._transform(score)
            if reward is None or not math.isfinite(reward):
                continue
            if self.baseline is None:
                self.baseline, self.reward_var = reward, 0.0
            advantage = reward - self.baseline
            if self.normalize and self.reward_var:
                advantage /= math.sqrt(self.reward_var) + 1e-8
            d, deviation = self.baseline_decay, reward - self.baseline
            self.reward_var = d * self.reward_var + (1 - d) * deviation ** 2  # type: ignore[operator]
            self.baseline = d * self.baseline + (1 - d) * reward
            sequences.append(space.to_decisions(arch))
            advantages.append(advantage)
            self.buffer.append(str(arch))
        if not sequences:
            return
        k = len(sequences)
        if self.memorization > 0:
            picks = self.rng.choice(len(self.buffer), size=min(self.memory_batch, len(self.buffer)),
                                    replace=False)
            sequences += [space.to_decisions(space.parse(self.buffer[int(i)])) for i in picks]
        _, logp, entropy, _ = self._rollout(space, sequences)
        adv = torch.tensor(advantages, dtype=logp.dtype)
        loss = (-adv * logp[:k] - self.entropy_weight * entropy[:k]).mean()
        if self.memorization > 0:
            loss = loss - self.memorization * logp[k:].mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.updates += 1

    def info(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "updates": self.updates}

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(),
                "controller": self.controller.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(),
                "vocab": list(self.vocab), "baseline": self.baseline, "reward_var": self.reward_var,
                "buffer": list(self.buffer), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.controller.load_state_dict(state["controller"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.vocab = list(state["vocab"])
        self._index = {d: i for i, d in enumerate(self.vocab)}
        self.baseline, self.reward_var = state["baseline"], state["reward_var"]
        self.buffer = deque(state["buffer"], maxlen=self.buffer.maxlen)
        self.updates = state["updates"]
