"""Equivalent architectures: ``space.canonical`` / ``canonical_key``, predictors' ``canonical``
option, and the model-based strategies never asking an architecture equivalent to one asked.

Cells are written by hand; tests/data/nb201_slice.csv holds 300 real NAS-Bench-201 rows (see
tests/test_predictors.py). The strategies run on a generated NB201-shaped table
(``make_nb201_table``).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from nasforge import registry
from nasforge.bench_tables import make_nb201_table
from nasforge.core import Objective, Trial
from nasforge.errors import ConfigError
from nasforge.evaluators.table import TableEvaluator
from nasforge.spaces.nb201 import NB201Arch, NB201Space, all_cells, canonical_key
from nasforge.testing import ToySpace

SLICE = Path(__file__).parent / "data" / "nb201_slice.csv"
# nodes 1 and 2 swapped (no edge between them): the same function, different strings
A = NB201Arch(("nor_conv_3x3", "nor_conv_1x1", "none", "skip_connect", "avg_pool_3x3", "nor_conv_3x3"))
B = NB201Arch(("nor_conv_1x1", "nor_conv_3x3", "none", "skip_connect", "nor_conv_3x3", "avg_pool_3x3"))
# a dead branch: node 2 receives nothing, so its conv into node 3 computes nothing
LIVE = NB201Arch(("nor_conv_3x3", "none", "none", "none", "skip_connect", "none"))
DEAD = NB201Arch(("nor_conv_3x3", "none", "none", "none", "skip_connect", "nor_conv_3x3"))


def test_nb201_canonical_is_one_representative_per_class():
    space = NB201Space()
    assert space.canonical(A) == space.canonical(B)
    assert space.canonical(LIVE) == space.canonical(DEAD)
    assert space.canonical(A) != space.canonical(LIVE)
    for arch in (A, B, LIVE, DEAD):
        rep = space.canonical(arch)
        assert space.canonical_key(rep) == space.canonical_key(arch)
        assert space.canonical(rep) == rep  # idempotent
    # the representative is the first cell of its class in all_cells() order
    # (conv then skip computes conv(x): the direct edge 0 -> 3 comes first)
    assert space.canonical(LIVE).ops == ("none", "none", "none", "nor_conv_3x3", "none", "none")
    zero = NB201Arch(("nor_conv_3x3",) * 2 + ("none",) * 4)
    assert space.canonical(zero).ops == ("none",) * 6
    reps = {space.canonical(c) for c in all_cells()}
    assert len(reps) == len({canonical_key(c) for c in all_cells()}) == 5273


def test_default_canonical_is_the_identity():
    space = ToySpace()
    arch = space.sample(np.random.default_rng(0))
    assert space.canonical(arch) is arch and space.canonical_key(arch) == str(arch)


def _slice():
    space = NB201Space()
    with open(SLICE) as f:
        rows = list(csv.DictReader(f))
    return space, [space.parse(r["arch"]) for r in rows], np.array([float(r["cifar100-val"]) for r in rows])


@pytest.mark.parametrize("name,options", [("mlp_batched", {"epochs": 30, "encoding": "onehot"}), ("gbt", {"n_estimators": 50})])
def test_canonical_predictors_give_equivalent_cells_equal_predictions(name, options):
    space, archs, y = _slice()
    on = registry.create("predictors", name, seed=0, **options).fit(archs[:150], y[:150], space)
    assert on.canonical  # on by default for accuracy predictors
    pa, pb = on.predict([A, B])
    assert pa == pb
    assert on.predict([LIVE])[0] == on.predict([DEAD])[0]
    off = registry.create("predictors", name, seed=0, canonical=False, **options)
    off.fit(archs[:150], y[:150], space)
    assert off.predict([LIVE])[0] != off.predict([DEAD])[0]


def test_cost_predictors_keep_dead_branches():
    assert not registry.create("predictors", "params").canonical  # dead convs still have weights
    assert not registry.create("predictors", "svr").canonical
    with pytest.raises(ConfigError, match="canonical"):
        registry.create("predictors", "gp", canonical="maybe")


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = make_nb201_table(tmp_path_factory.mktemp("nb201") / "nb201.csv", seed=0)
    return TableEvaluator(path=str(path), search_metric="cifar10-val", report_metric="cifar10-test")


@pytest.mark.parametrize("name", ["bananas", "predictor_evolution"])
def test_strategies_never_ask_an_equivalent_cell_twice(name, table):
    space = NB201Space()

    def run(canonical):
        s = registry.create("strategies", name, seed=3, epochs=30, retrain_every=10, initial=10,
                            canonical=canonical)
        s.setup(space, Objective("cifar10-val"), budget=60)
        asked = []
        for i in range(60):
            arch = s.ask(1)[0]
            asked.append(arch)
            s.tell([Trial(i, arch, table.evaluate(arch, None, None, seed=i), seed=i)])
        return asked

    keys = [space.canonical_key(a) for a in run(True)]
    assert len(set(keys)) == len(keys) == 60
    plain = run(False)
    assert len({str(a) for a in plain}) == 60  # without it, only the texts are distinct
    with pytest.raises(ConfigError, match="canonical"):
        registry.create("strategies", name, canonical="maybe")
