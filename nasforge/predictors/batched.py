"""``mlp_batched``: the BANANAS ensemble of MLPs, cheap enough to refit inside a search.

The ``members`` MLPs are one module whose weights carry a leading member axis, so the whole
ensemble trains in one full-batch optimisation through the engine (``nasforge.training.fit``,
regression kind) and scores thousands of candidates in one batched forward. Members differ by
initialisation only (as in BANANAS); their losses are independent, so training them together is
the same as training them apart. The mean and the std across members are the prediction and its
uncertainty. With ``bootstrap`` each member fits its own bootstrap resample of the examples
(per-member example weights drawn from the seed), which widens the spread where the data are
thin and so makes Thompson sampling explore more.

Inputs (``encoding``): ``onehot`` (``space.encode``), ``path`` (BANANAS's path encoding,
``nasforge.graph.encode_paths``; strong on cell spaces such as NAS-Bench-201) or ``both``
(concatenated). Encodings are cached by architecture text, so a strategy that refits and
rescores the same candidates pays for each encoding once.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..core import Architecture, SearchSpace
from ..errors import ConfigError
from ..registry import register
from ..training import Engine, TrainConfig, predict_batches, seeded_module
from .base import Predictor, Standardizer

ENCODINGS = ("onehot", "path", "both")


def _weighted_mse(model: nn.Module, x: torch.Tensor, packed: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over members of each member's weighted mean squared error; ``packed`` holds the
    targets ``(B, members)`` then the example weights ``(B, members)``."""
    out = model(x)
    m = out.shape[1]
    target, weight = packed[:, :m], packed[:, m:]
    per_member = (weight * (out - target) ** 2).sum(0) / weight.sum(0).clamp_min(1e-12)
    return per_member.mean(), out


class BatchedMLP(nn.Module):
    """``members`` independent MLPs (``layers`` hidden layers of ``hidden`` ReLU units) evaluated
    together: input ``(B, width)``, output ``(B, members)``."""

    def __init__(self, width: int, hidden: int, layers: int, members: int):
        super().__init__()
        sizes = [width] + [hidden] * layers + [1]
        self.depth = len(sizes) - 1
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):  # own parameters, no containers
            self.register_parameter(f"w{i}", nn.Parameter(torch.empty(members, a, b)))
            self.register_parameter(f"b{i}", nn.Parameter(torch.empty(members, 1, b)))

    @property
    def weights(self) -> list[torch.Tensor]:
        return [getattr(self, f"w{i}") for i in range(self.depth)]

    @property
    def biases(self) -> list[torch.Tensor]:
        return [getattr(self, f"b{i}") for i in range(self.depth)]

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Each member's layer as ``nn.Linear`` initialises it (Kaiming uniform, fan-in bias)."""
        with torch.no_grad():
            for w, b in zip(self.weights, self.biases):
                bound = 1.0 / math.sqrt(w.shape[1])
                w.uniform_(-bound, bound, generator=generator)  # = kaiming_uniform(a=sqrt(5))
                b.uniform_(-bound, bound, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.unsqueeze(0)  # (1, B, width), broadcast over members
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b, h.expand(w.shape[0], -1, -1), w) if i == 0 else torch.baddbmm(b, h, w)
            if i < last:
                h = torch.relu(h)
        return h.squeeze(-1).transpose(0, 1)  # (B, members)


@register("predictors", "mlp_batched")
class BatchedMLPEnsemble(Predictor):
    """BANANAS's ensemble of ``members`` MLPs trained together, full batch, ``epochs`` steps of
    AdamW with a cosine schedule; inputs by ``encoding`` (``onehot``, ``path`` or ``both``)."""

    name = "mlp_batched"
    has_std = True

    def __init__(self, *, seed: int = 0, members: int = 5, hidden: int = 32, layers: int = 2,
                 epochs: int = 200, lr: float = 1e-2, weight_decay: float = 1e-4,
                 encoding: str = "path", bootstrap: bool = False, canonical: bool = True):
        super().__init__(seed=seed, canonical=canonical)
        self.bootstrap = bool(bootstrap)
        for key, value in (("members", members), ("hidden", hidden), ("layers", layers),
                           ("epochs", epochs)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{self.name}: {key} = {value!r}; expected an integer >= 1")
        if encoding not in ENCODINGS:
            raise ConfigError(f"{self.name}: encoding = {encoding!r}; expected one of "
                              f"{', '.join(ENCODINGS)}")
        self.members, self.hidden, self.layers = members, hidden, layers
        self.encoding = encoding
        self.config = TrainConfig(optimizer="adamw", lr=lr, weight_decay=weight_decay,
                                  batch_size=1 << 30, epochs=epochs, cosine=True,
                                  kind="regression", amp=False)
        self.net: BatchedMLP | None = None
        self._cache: dict[str, np.ndarray] = {}
        self._cache_space: SearchSpace | None = None

    # -- inputs -------------------------------------------------------------------------------------
    def share_cache(self, cache: dict[str, np.ndarray]) -> None:
        """Keep encodings in ``cache`` (a dict the caller reuses across predictors of one space
        and one ``encoding``)."""
        self._cache, self._cache_space = cache, None

    def features(self, archs: Sequence[Architecture], space: SearchSpace) -> np.ndarray:
        """The ``(len(archs), width)`` float32 inputs of ``archs`` (cached by text per space;
        with ``canonical``, the inputs of each one's representative)."""
        from ..graph import encode_paths

        if space is not self._cache_space:  # a shared cache is adopted by its first space
            if self._cache_space is not None:
                self._cache.clear()
            self._cache_space = space
        rows = []
        for a in archs:
            key = str(a)
            row = self._cache.get(key)
            if row is None:
                if self.canonical:
                    a = space.canonical(a)
                parts = []
                if self.encoding in ("onehot", "both"):
                    parts.append(np.asarray(space.encode(a), dtype=np.float32))
                if self.encoding in ("path", "both"):
                    parts.append(encode_paths(space, a))
                row = np.concatenate(parts) if len(parts) > 1 else parts[0]
                self._cache[key] = row
            rows.append(row)
        return np.stack(rows)

    # -- the contract ---------------------------------------------------------------------------------
    def _fit(self, archs: list[Architecture], y: np.ndarray, space: SearchSpace) -> None:
        self._scale = Standardizer(y)
        x = torch.from_numpy(self.features(archs, space))
        t = torch.as_tensor(self._scale.forward(y), dtype=torch.float32)
        t = t.unsqueeze(1).expand(-1, self.members)
        n, m = len(y), self.members
        if self.bootstrap:  # member j weighs example i by how often its resample drew it
            draws = np.random.default_rng(self.seed).integers(n, size=(m, n))
            w = np.stack([np.bincount(d, minlength=n) for d in draws], axis=1)
        else:
            w = np.ones((n, m))
        packed = torch.cat([t, torch.as_tensor(w, dtype=torch.float32)], dim=1)  # rows stay aligned
        width = x.shape[1]
        net = seeded_module(lambda: BatchedMLP(width, self.hidden, self.layers, self.members),
                            self.seed)
        Engine(net, self.config, seed=self.seed, loss_fn=_weighted_mse).fit((x, packed))
        self.net = net.eval()

    def _predict(self, archs: list[Architecture]) -> tuple[np.ndarray, np.ndarray]:
        assert self.space is not None and self.net is not None
        return self.predict_features(self.features(archs, self.space))

    def predict_features(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std over members for precomputed ``features`` rows."""
        assert self.net is not None
        outs = predict_batches(self.net, torch.from_numpy(np.ascontiguousarray(x)),
                               batch_size=4096).numpy().astype(np.float64)
        outs = self._scale.inverse(outs)  # (B, members)
        std = outs.std(axis=1) if self.members > 1 else np.zeros(outs.shape[0])
        return outs.mean(axis=1), std

    def member_predictions(self, x: np.ndarray) -> np.ndarray:
        """Every member's prediction, ``(len(x), members)``, in the targets' units."""
        assert self.net is not None
        outs = predict_batches(self.net, torch.from_numpy(np.ascontiguousarray(x)),
                               batch_size=4096).numpy().astype(np.float64)
        return self._scale.inverse(outs)

    # -- weights as plain state (strategies save them with their checkpoints) -------------------------
    def state_dict(self) -> dict:
        if self.net is None:
            return {}
        return {"weights": {k: v.detach().clone() for k, v in self.net.state_dict().items()},
                "width": int(self.net.weights[0].shape[1]),
                "scale": [self._scale.mean, self._scale.std]}

    def load_state_dict(self, state: dict, space: SearchSpace) -> None:
        if not state:
            self.net, self.space = None, None
            return
        net = BatchedMLP(int(state["width"]), self.hidden, self.layers, self.members)
        net.load_state_dict(state["weights"])
        self.net = net.eval()
        self._scale = Standardizer(np.zeros(1))
        self._scale.mean, self._scale.std = (float(v) for v in state["scale"])
        self.space = space
