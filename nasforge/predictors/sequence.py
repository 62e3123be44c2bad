"""``lstm``: PNAS's accuracy predictor (Liu et al., ECCV 2018), an LSTM over the decision sequence.

Each architecture is read through the space's sequential view (``space.to_decisions``): every
decision becomes a token (its type and text), tokens are embedded, an LSTM reads the sequence and
a linear head maps its last hidden state to the predicted score. Works on every space, whatever
the length of its sequences (shorter ones are padded; the state after the last real token is
used). Tokens never seen in training share one "unknown" embedding. ``members`` networks from
their own seeds (as in ``mlp_ensemble``) give the mean and a std; PNAS itself used an ensemble
of predictors too.
"""

from __future__ import annotations

from typing import Hashable

import numpy as np
import torch
from torch import nn

from ..core import Architecture, SearchSpace
from ..registry import register
from .neural import _Ensemble, _positive_int

PAD, UNKNOWN = 0, 1


def token(decision: Hashable) -> str:
    """A decision as a vocabulary entry (type and text, so 0 and '0' stay apart)."""
    return f"{type(decision).__name__}:{decision}"


class SequenceLSTM(nn.Module):
    """Embedding -> LSTM -> linear head on the hidden state after each sequence's last token.

    Input: float tensor (B, L) of token ids (0 = padding), as the training engine batches it.
    """

    def __init__(self, vocab: int, embed: int, hidden: int, layers: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed, padding_idx=PAD)
        self.lstm = nn.LSTM(embed, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = x.long()
        last = (ids != PAD).sum(dim=1).clamp(min=1) - 1
        out, _ = self.lstm(self.embed(ids))
        return self.head(out[torch.arange(ids.shape[0], device=ids.device), last])


@register("predictors", "lstm")
class LSTMPredictor(_Ensemble):
    """PNAS: token embedding (``embed``), an LSTM (``layers`` x ``hidden``), a linear head;
    ``members`` networks give a mean and a std. Trained by ``nasforge.training`` (regression)."""

    name = "lstm"

    def __init__(self, *, seed: int = 0, members: int = 3, epochs: int = 200, lr: float = 3e-3,
                 weight_decay: float = 1e-4, batch_size: int = 32, hidden: int = 64,
                 layers: int = 1, embed: int = 32, canonical: bool = True):
        super().__init__(seed=seed, members=members, epochs=epochs, lr=lr,
                         weight_decay=weight_decay, batch_size=batch_size, hidden=hidden,
                         layers=layers, canonical=canonical)
        self.embed = _positive_int("embed", embed)
        self._vocab: dict[str, int] = {}

    def _fit(self, archs: list[Architecture], y: np.ndarray, space: SearchSpace) -> None:
        tokens = sorted({token(d) for a in archs for d in space.to_decisions(a)})
        self._vocab = {t: i + 2 for i, t in enumerate(tokens)}
        super()._fit(archs, y, space)

    def _inputs(self, archs: list[Architecture]) -> torch.Tensor:
        assert self.space is not None
        seqs = [[self._vocab.get(token(d), UNKNOWN) for d in self.space.to_decisions(a)]
                for a in archs]
        x = np.zeros((len(seqs), max(1, max(len(s) for s in seqs))), dtype=np.float32)
        for i, s in enumerate(seqs):
            x[i, :len(s)] = s
        return torch.from_numpy(x)

    def _make(self, width: int) -> nn.Module:
        return SequenceLSTM(len(self._vocab) + 2, self.embed, self.hidden, self.layers)
