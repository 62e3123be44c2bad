"""Architectures to train and test graph hypernetworks on, in the spirit of DeepNets-1M.

GHN-2 (Knyazev et al., 2021) trains on a million random DARTS-style networks (DeepNets-1M) and
tests on held-out ones, plus out-of-distribution sets. :class:`ArchGenerator` builds such
networks from nasforge's spaces for one task's input shape and class count:

- **DARTS-style networks** (most of them): a random normal and reduction cell, each node summing
  two edges from two distinct earlier states, operations drawn from a pool wider than DARTS's
  (:data:`OP_POOL`: pooling, identity, separable and dilated convolutions, plain 1x1 / 3x3 / 5x5
  and factorised 7x1-1x7 convolutions); with probability 0.5 the reduction cell uses pooling and
  identity only (as DeepNets-1M); varied numbers of cells, nodes per cell, channels and stem
  widths; batch norm, except some shallow networks;
- **chain CNNs** (the DP-NAS / MetaQNN space: convolutions, residual blocks, pooling, FC layers,
  with or without batch norm) and **NAS-Bench-201 networks** (random cells, 1-2 cells per stage).

Named splits (:data:`SPLITS`):

=========  ===============================================================================
``train``  an unbounded stream; ``description("train", i)`` for any ``i``
``val``    held-out networks from the training distribution
``test``   held-out networks from the training distribution
``wide``   test-like networks with ``wide_factor`` (4) times the channels
``deep``   DARTS-style networks with ``deep_cells`` (10-16) cells and 1-2 nodes per cell
``dense``  DARTS-style networks with ``dense_nodes`` (5-8) nodes per cell
``bnfree`` test-like networks without any normalisation layer
=========  ===============================================================================

Disjointness is structural, not left to chance: the *cell* (the genotype, the NB201 cell or the
chain string, whatever the width and depth) is hashed into 10 buckets; ``train`` only draws
cells of buckets 2-9, ``val`` of bucket 0, ``test`` and the out-of-distribution splits of
bucket 1, so no test cell is ever a training cell, however long the training stream runs.
Every split has its own random stream derived from ``(seed, split)`` (unlike the reference
script, which gives ``train`` and ``test`` the same seed); a split's networks are fixed by the
seed, and so is their random initialisation (drawn under a forked, seeded torch generator; the
global random state is untouched).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ..core import Task
from ..errors import ConfigError

#: split names, in a fixed order (the order fixes each split's random stream)
SPLITS: tuple[str, ...] = ("train", "val", "test", "wide", "deep", "dense", "bnfree")
#: default number of networks per evaluation split (``train`` is a stream)
DEFAULT_SIZES: dict[str, int] = {"val": 50, "test": 200, "wide": 50, "deep": 50, "dense": 50,
                                 "bnfree": 50}
#: the DARTS-style operation pool (DeepNets-1M's, without attention and squeeze-excitation)
OP_POOL: tuple[str, ...] = ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
                            "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5", "conv_1x1",
                            "conv_3x3", "conv_5x5", "conv_7x1_1x7")
REDUCE_POOL: tuple[str, ...] = ("max_pool_3x3", "avg_pool_3x3", "skip_connect")
_LEARNED = frozenset(OP_POOL) - frozenset(REDUCE_POOL)
_BUCKETS = 10
_BIG = frozenset({"conv_5x5", "conv_7x1_1x7"})


@dataclass(frozen=True)
class GeneratorConfig:
    """Sizes of the generated networks (small by default: CPU, digits / CIFAR scale).

    ``channels``: initial widths ``C`` of DARTS-style networks; ``cells``, ``nodes``: inclusive
    ranges of cells per network and nodes per cell; ``stem_multipliers``: the stem has
    ``m * C`` channels; ``families``: relative frequencies of ``darts``, ``chain`` and ``nb201``
    networks in train / val / test / wide / bnfree; ``bn_free_prob``: probability that a
    shallow (at most ``shallow_cells`` cells) training-distribution network has no batch norm;
    ``wide_factor``, ``deep_cells``, ``dense_nodes``: the out-of-distribution splits;
    ``nb201_cells``: cells per stage of NAS-Bench-201 networks; ``chain_features``: widths of
    chain CNN layers.
    """

    channels: tuple[int, ...] = (8, 12, 16)
    cells: tuple[int, int] = (2, 6)
    nodes: tuple[int, int] = (1, 4)
    stem_multipliers: tuple[int, ...] = (1, 2)
    ops: tuple[str, ...] = OP_POOL
    families: dict[str, float] = field(default_factory=lambda: {"darts": 0.8, "chain": 0.1,
                                                                "nb201": 0.1})
    bn_free_prob: float = 0.2
    shallow_cells: int = 3
    wide_factor: int = 4
    deep_cells: tuple[int, int] = (10, 16)
    dense_nodes: tuple[int, int] = (5, 8)
    nb201_cells: tuple[int, int] = (1, 2)
    chain_features: tuple[int, ...] = (8, 16, 32)

    def __post_init__(self) -> None:
        from ..ops.darts_ops import OPS

        def int_range(name: str, value: Any, low: int) -> None:
            if (not isinstance(value, (tuple, list)) or len(value) != 2
                    or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
                    or not low <= value[0] <= value[1]):
                raise ConfigError(f"ghn generator: {name}={value!r}; expected (low, high) integers "
                                  f"with {low} <= low <= high")
        for name in ("cells", "nodes", "deep_cells", "dense_nodes", "nb201_cells"):
            int_range(name, getattr(self, name), 0 if name == "nb201_cells" else 1)
        if self.nodes[1] > 16 or self.dense_nodes[1] > 16:
            raise ConfigError("ghn generator: at most 16 nodes per cell")
        for name in ("channels", "stem_multipliers", "chain_features"):
            v = getattr(self, name)
            if not v or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in v):
                raise ConfigError(f"ghn generator: {name}={v!r}; expected positive integers")
        unknown = [op for op in self.ops if op not in OPS or op == "none"]
        if unknown or not self.ops:
            raise ConfigError(f"ghn generator: ops {unknown or list(self.ops)!r}; expected names from "
                              f"{', '.join(o for o in OPS if o != 'none')}")
        if not any(op in _LEARNED for op in self.ops):
            raise ConfigError("ghn generator: ops must include an operation with parameters")
        bad = {k: v for k, v in self.families.items()
               if k not in ("darts", "chain", "nb201") or not isinstance(v, (int, float)) or v < 0}
        if bad or not sum(self.families.values()) > 0:
            raise ConfigError(f"ghn generator: families={self.families!r}; expected non-negative "
                              "weights for darts, chain and nb201")
        if not 0.0 <= self.bn_free_prob <= 1.0:
            raise ConfigError(f"ghn generator: bn_free_prob={self.bn_free_prob!r}; expected [0, 1]")
        if self.wide_factor < 1:
            raise ConfigError(f"ghn generator: wide_factor={self.wide_factor!r}; expected >= 1")


@dataclass
class GeneratedNet:
    """One generated network: its split, index, description (JSON-friendly) and module."""

    split: str
    index: int
    description: dict[str, Any]
    model: nn.Module

    @property
    def key(self) -> str:
        return description_key(self.description)


def description_key(description: dict[str, Any]) -> str:
    """A canonical text equal exactly for descriptions of the same network."""
    return json.dumps({k: v for k, v in description.items() if k not in ("split", "index")},
                      sort_keys=True)


def cell_key(description: dict[str, Any]) -> str:
    """The cell structure alone (no widths, depths or batch norm): what the buckets hash."""
    if description["family"] == "darts":
        from ..spaces.darts import parse_genotype
        geno = parse_genotype(description["arch"])
        return _darts_cell_key((geno.normal, geno.reduce))
    return f"{description['family']}:{description['arch']}"


def _darts_cell_key(cells: Any) -> str:
    return f"darts:{tuple(cells)!r}"


def _hash_bucket(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") % _BUCKETS


def _bucket(description: dict[str, Any]) -> int:
    return _hash_bucket(cell_key(description))


def _allowed(split: str, bucket: int) -> bool:
    if split == "train":
        return bucket >= 2
    return bucket == (0 if split == "val" else 1)


def strip_batch_norm(model: nn.Module) -> nn.Module:
    """Replace every batch-norm layer of ``model`` by ``nn.Identity`` (in place; returned)."""
    for name, child in list(model.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(model, name, nn.Identity())
        else:
            strip_batch_norm(child)
    return model


class ArchGenerator:
    """Random networks for one task's input shape and class count, in named splits.

    ``ArchGenerator(task)`` or ``ArchGenerator(input_shape=(1, 8, 8), num_classes=10)``;
    ``seed`` fixes every split; ``sizes`` overrides :data:`DEFAULT_SIZES`; ``config`` a
    :class:`GeneratorConfig`. ``descriptions(split)`` lists a split's networks (cheap: no module
    is built); ``build(description)`` builds one; ``split(name)`` does both;
    ``stream("train")`` yields training networks forever.
    """

    def __init__(self, task: Task | None = None, *, input_shape: Sequence[int] | None = None,
                 num_classes: int | None = None, seed: int = 0, sizes: dict[str, int] | None = None,
                 config: GeneratorConfig | None = None):
        if task is not None:
            input_shape, num_classes, kind = task.input_shape, task.num_classes, task.kind
        else:
            kind = "image" if input_shape is not None and len(input_shape) == 3 else "series"
        if input_shape is None or num_classes is None:
            raise ConfigError("ghn generator: give a task, or input_shape and num_classes")
        shape = tuple(int(v) for v in input_shape)
        if len(shape) not in (2, 3) or min(shape) < 1:
            raise ConfigError(f"ghn generator: input shape {shape}; expected (C, H, W) images or "
                              "(C, L) series")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ConfigError(f"ghn generator: num_classes={num_classes!r}; expected an integer >= 2")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"ghn generator: seed={seed!r}; expected an integer >= 0")
        self.input_shape, self.num_classes, self.kind = shape, int(num_classes), kind
        self.seed = seed
        self.config = config or GeneratorConfig()
        self.sizes = dict(DEFAULT_SIZES)
        for name, n in (sizes or {}).items():
            if name not in DEFAULT_SIZES:
                raise ConfigError(f"ghn generator: unknown split {name!r} in sizes; expected one of "
                                  f"{', '.join(DEFAULT_SIZES)}")
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise ConfigError(f"ghn generator: sizes[{name!r}]={n!r}; expected an integer >= 0")
            self.sizes[name] = n
        self._cache: dict[str, list[dict[str, Any]]] = {}
        self._rngs: dict[str, np.random.Generator] = {}
        self._task = Task("ghn-generator", "image" if len(shape) == 3 else "series", shape,
                          self.num_classes, *[(torch.zeros(0, *shape), torch.zeros(0, dtype=torch.long))] * 3)
        self._spaces: dict[Any, Any] = {}
        ops = tuple(self.config.ops)
        if len(shape) == 2:  # series: the factorised 7x1-1x7 convolution is 2-D only
            ops = tuple(op for op in ops if op != "conv_7x1_1x7")
        self._ops = ops
        fam = {k: float(v) for k, v in self.config.families.items() if v > 0}
        if len(shape) == 2:
            fam.pop("nb201", None)  # image cells only
        if not fam:
            raise ConfigError("ghn generator: no architecture family fits this input shape")
        self._families = (list(fam), np.array(list(fam.values())) / sum(fam.values()))

    # -- descriptions ----------------------------------------------------------------------------
    def _check_split(self, split: str) -> None:
        if split not in SPLITS:
            raise ConfigError(f"ghn generator: unknown split {split!r}; expected one of "
                              f"{', '.join(SPLITS)}")

    def _rng(self, split: str, index: int | None = None) -> np.random.Generator:
        entropy = [self.seed, SPLITS.index(split)] + ([index] if index is not None else [])
        return np.random.default_rng(np.random.SeedSequence(entropy))

    def description(self, split: str, index: int) -> dict[str, Any]:
        """The ``index``-th network of ``split`` (any ``index`` for ``train``)."""
        self._check_split(split)
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise ConfigError(f"ghn generator: index={index!r}; expected an integer >= 0")
        if split == "train":
            rng = self._rng("train", index)
            for _ in range(1000):
                d, bucket = self._draw("train", rng)
                if _allowed("train", bucket):
                    return {**d, "split": "train", "index": index}
            raise ConfigError("ghn generator: could not draw a training network (space too small?)")
        if index >= self.sizes[split]:
            raise ConfigError(f"ghn generator: split {split!r} has {self.sizes[split]} networks; "
                              f"index {index} is out of range")
        return self.descriptions(split, index + 1)[index]

    def descriptions(self, split: str, n: int | None = None) -> list[dict[str, Any]]:
        """The first ``n`` networks of ``split`` (default: the split's size), without duplicates."""
        self._check_split(split)
        if n is None:
            if split == "train":
                raise ConfigError("ghn generator: the train split is a stream; give n")
            n = self.sizes[split]
        if split == "train":
            return [self.description("train", i) for i in range(n)]
        cached = self._cache.setdefault(split, [])
        if len(cached) >= n:
            return cached[:n]
        rng = self._rngs.setdefault(split, self._rng(split))  # continues where it stopped
        seen = {description_key(d) for d in cached}
        attempts = 0
        while len(cached) < n:
            attempts += 1
            if attempts > 1000 * (n + 10):
                raise ConfigError(f"ghn generator: only {len(cached)} distinct networks found for "
                                  f"split {split!r}; the configured space is too small for {n}")
            d, bucket = self._draw(split, rng)
            if not _allowed(split, bucket) or description_key(d) in seen:
                continue
            seen.add(description_key(d))
            cached.append({**d, "split": split, "index": len(cached)})
        return cached[:n]

    def _draw(self, split: str, rng: np.random.Generator) -> tuple[dict[str, Any], int]:
        """One description and its cell's bucket."""
        d = self._draw_any(split, rng)
        if d["family"] == "darts":
            return d, int(d.pop("_bucket"))
        return d, _hash_bucket(f"{d['family']}:{d['arch']}")

    def _draw_any(self, split: str, rng: np.random.Generator) -> dict[str, Any]:
        cfg = self.config
        names, probs = self._families
        family = "darts" if split in ("deep", "dense") else str(names[rng.choice(len(names), p=probs)])
        if family == "darts":
            return self._draw_darts(split, rng)
        if family == "nb201":
            c = int(rng.choice(cfg.channels)) * (cfg.wide_factor if split == "wide" else 1)
            n = int(rng.integers(cfg.nb201_cells[0], cfg.nb201_cells[1] + 1))
            from ..spaces.nb201 import OPS as NB_OPS
            from ..spaces.nb201 import NB201Space
            ops = [NB_OPS[int(k)] for k in rng.integers(len(NB_OPS), size=6)]
            text = NB201Space().from_decisions(ops)
            bn = split != "bnfree"
            return {"family": "nb201", "arch": str(text), "channels": c, "cells_per_stage": n, "bn": bn}
        # chain
        bn = split != "bnfree" and bool(rng.random() >= cfg.bn_free_prob)
        space = self._chain_space(bn)
        arch = space.sample(rng)
        if split == "wide":
            arch = self._widen_chain(space, arch)
        return {"family": "chain", "arch": str(arch), "bn": bn}

    def _draw_darts(self, split: str, rng: np.random.Generator) -> dict[str, Any]:
        cfg = self.config
        lo, hi = cfg.deep_cells if split == "deep" else cfg.cells
        layers = int(rng.integers(lo, hi + 1))
        if split == "deep":
            nodes_range = (1, 2)
        elif split == "dense":
            nodes_range = cfg.dense_nodes
        else:
            nodes_range = cfg.nodes
        for _ in range(10_000):
            cells = self._draw_cells(rng, nodes_range)
            bucket = _hash_bucket(_darts_cell_key(cells))
            if _allowed(split, bucket):
                break
        from ..spaces.darts import Genotype
        geno = Genotype(cells[0], tuple(range(2, len(cells[0]) + 2)), cells[1],
                        tuple(range(2, len(cells[1]) + 2)))
        c = int(rng.choice(cfg.channels)) * (cfg.wide_factor if split == "wide" else 1)
        stem = int(rng.choice(cfg.stem_multipliers))
        if split == "bnfree":
            bn = False
        else:
            bn = not (layers <= cfg.shallow_cells and rng.random() < cfg.bn_free_prob)
        from ..spaces.darts import check_input_size
        try:
            check_input_size(self.input_shape, layers)
        except Exception:
            layers = 2  # tiny inputs: as many cells as the reductions allow
        return {"family": "darts", "arch": str(geno), "C": c, "layers": layers,
                "stem_multiplier": stem, "bn": bn, "_bucket": bucket}

    def _draw_cells(self, rng: np.random.Generator, nodes_range: Sequence[int]) -> list[tuple]:
        """A normal and a reduction cell (edges of each node sorted by input, then op)."""
        cells = []
        for reduction in (False, True):
            nodes = int(rng.integers(nodes_range[0], nodes_range[1] + 1))
            pool = self._ops
            if reduction and rng.random() < 0.5:
                pool = tuple(op for op in REDUCE_POOL if op in self._ops) or self._ops
            small = tuple(op for op in pool if op not in _BIG) or pool
            cell, big = [], False
            for j in range(nodes):
                a = int(rng.integers(j + 2))
                b = int(rng.integers(j + 1))
                b += b >= a  # two distinct input states
                edges = []
                for src in (a, b):
                    # DeepNets-1M's rule: at most one 5x5 / 7x7 dense convolution per cell
                    choices = small if big else pool
                    op = str(choices[int(rng.integers(len(choices)))])
                    big = big or op in _BIG
                    edges.append((op, src))
                cell.append(tuple(sorted(edges, key=lambda e: (e[1], e[0]))))
            cells.append(tuple(cell))
        if not any(op in _LEARNED for cell in cells for edges in cell for op, _ in edges):
            # a network of pooling and identities only: give one edge of the normal cell a conv
            learned = [op for op in self._ops if op in _LEARNED]
            first = list(cells[0][0])
            first[0] = (learned[int(rng.integers(len(learned)))], first[0][1])
            cells[0] = (tuple(sorted(first, key=lambda e: (e[1], e[0]))),) + cells[0][1:]
        return cells

    def _chain_space(self, bn: bool) -> Any:
        key = ("chain", bn)
        if key not in self._spaces:
            from ..spaces.chain import ChainSpace
            self._spaces[key] = ChainSpace(
                input_shape=self.input_shape, num_classes=self.num_classes,
                features=tuple(self.config.chain_features), kernels=(1, 3, 5), max_conv=6,
                max_fc=1, fc_sizes=(32, 64), max_image_size=8, batch_norm=bn)
        return self._spaces[key]

    def _widen_chain(self, space: Any, arch: Any) -> Any:
        wide = str(arch)
        import re

        def widen(m: "re.Match[str]") -> str:
            return f"C({int(m.group(1)) * self.config.wide_factor},"
        return space.parse(re.sub(r"C\((\d+),", widen, wide))

    # -- modules ---------------------------------------------------------------------------------
    def build(self, description: dict[str, Any]) -> nn.Module:
        """The network a description names, for this generator's task, with a fixed random
        initialisation (seeded from the description; global random state untouched)."""
        family = description.get("family")
        seed = int.from_bytes(hashlib.sha256(description_key(description).encode()).digest()[:4], "big")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if family == "darts":
                from ..spaces.darts import build_network, parse_genotype
                model: nn.Module = build_network(
                    parse_genotype(description["arch"]), self.input_shape, self.num_classes,
                    C=int(description["C"]), layers=int(description["layers"]),
                    stem_multiplier=int(description["stem_multiplier"]))
            elif family == "nb201":
                from ..spaces.nb201 import NB201Space
                space = NB201Space(channels=int(description["channels"]),
                                   cells_per_stage=int(description["cells_per_stage"]))
                model = space.build(space.parse(description["arch"]), self._task)
            elif family == "chain":
                space = self._chain_space(bool(description["bn"]))
                model = space.build(space.parse(description["arch"]), self._task)
            else:
                raise ConfigError(f"ghn generator: unknown family {family!r} in description; "
                                  "expected darts, chain or nb201")
        if not description.get("bn", True):
            strip_batch_norm(model)
        return model

    def split(self, name: str, n: int | None = None) -> list[GeneratedNet]:
        """Built networks of split ``name`` (the first ``n``; default the split's size)."""
        return [GeneratedNet(name, d["index"], d, self.build(d)) for d in self.descriptions(name, n)]

    def stream(self, split: str = "train", start: int = 0) -> Iterator[GeneratedNet]:
        """Networks of ``split`` one after another (forever for ``train``)."""
        self._check_split(split)
        i = start
        while split == "train" or i < self.sizes[split]:
            d = self.description(split, i)
            yield GeneratedNet(split, i, d, self.build(d))
            i += 1

    def options(self) -> dict[str, Any]:
        """What fixes the generated networks (saved with a trained GHN)."""
        return {"input_shape": list(self.input_shape), "num_classes": self.num_classes,
                "seed": self.seed, "sizes": dict(self.sizes), "config": asdict(self.config)}


__all__ = ["ArchGenerator", "GeneratorConfig", "GeneratedNet", "SPLITS", "DEFAULT_SIZES", "OP_POOL",
           "description_key", "cell_key", "strip_batch_norm"]
