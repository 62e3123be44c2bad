"""The progressive (PNAS / POPNAS) strategy on the cell space.

Most checks use a *synthetic evaluator*: accuracy and training time are known functions of the
cell (``true_score`` / ``true_time`` below: sums over its operators plus a small hash-based
jitter that keeps values distinct, equal for equivalent cells), and "oracle" predictors that
return exactly those functions, so the cells the strategy asks can be checked against a brute
force over every expansion. One check learns with the real default predictors; one runs the
``nasforge search`` command on digits with a tiny budget.
"""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
import torch

from nasforge import registry
from nasforge.core import Evaluator, Objective, Objectives, Trial, TrialResult
from nasforge.errors import ConfigError
from nasforge.predictors.base import Predictor
from nasforge.registry import register
from nasforge.run.loop import Budget, Search
from nasforge.run.store import Store
from nasforge.spaces.cell import CellSpace
from nasforge.strategies.progressive import Progressive, pareto_walk

torch.set_num_threads(1)

OPS = ["identity", "3x3 conv", "2x2 maxpool"]
ACC = {"identity": 0.02, "3x3 conv": 0.05, "2x2 maxpool": 0.01}
COST = {"identity": 0.1, "3x3 conv": 1.0, "2x2 maxpool": 0.3}


def space(**options) -> CellSpace:
    return CellSpace(blocks=3, operators=OPS, **options)


def _jitter(cell, scale: float) -> float:
    key = space().canonical_key(cell)
    return (zlib.crc32(key.encode()) % 100_000) / 100_000 * scale


def true_score(cell) -> float:
    """Known accuracy of a cell: 0.3 + per-operator gains + jitter < 0.001."""
    return 0.3 + sum(ACC[b[1]] + ACC[b[3]] for b in cell.blocks) + _jitter(cell, 1e-3)


def true_time(cell) -> float:
    """Known training time of a cell: 1 s + per-operator costs + jitter < 0.01 s."""
    return 1.0 + sum(COST[b[1]] + COST[b[3]] for b in cell.blocks) + _jitter(cell, 1e-2) + \
        (zlib.crc32(str(cell).encode()) % 7) * 1e-6


@register("predictors", "test_oracle_score")
class OracleScore(Predictor):
    """Predicts ``true_score`` exactly (a stand-in for a perfect accuracy predictor)."""

    name = "test_oracle_score"

    def _fit(self, archs, y, space):
        pass

    def _predict(self, archs):
        return np.array([true_score(a) for a in archs]), None


@register("predictors", "test_oracle_time")
class OracleTime(Predictor):
    """Predicts ``true_time`` exactly."""

    name = "test_oracle_time"

    def _fit(self, archs, y, space):
        pass

    def _predict(self, archs):
        return np.array([true_time(a) for a in archs]), None


def result(cell) -> TrialResult:
    return TrialResult(metrics={"val_acc": true_score(cell)}, cost={"train_seconds": true_time(cell)})


def make(objective="max:val_acc", **options) -> Progressive:
    strategy = registry.create("strategies", "progressive", seed=0, **options)
    strategy.setup(space(), Objectives.of(objective), budget=None)
    return strategy


def drive(strategy, n: int, start: int = 0) -> list:
    asked = []
    for i in range(start, start + n):
        cell = strategy.ask(1)[0]
        asked.append(cell)
        strategy.tell([Trial(id=i, arch=cell, result=result(cell))])
    return asked


def expansions(sp: CellSpace, parents) -> list:
    out, seen = [], set()
    for p in parents:
        for c in sp.expand(p):
            key = sp.canonical_key(c)
            if key not in seen:
                seen.add(key)
                out.append(c)
    return out


def test_pnas_asks_every_one_block_cell_then_exactly_the_top_k():
    sp = space()
    s = make(mode="pnas", beam=7, predictor="test_oracle_score")
    first = drive(s, 21)
    assert first == sp.first_cells()  # (L^2 O^2 + L O) / 2 = (4*9 + 2*3) / 2 = 21, in order
    step2 = drive(s, 7, start=21)
    cands = expansions(sp, first)
    ranked = sorted(cands, key=true_score, reverse=True)  # brute force over every expansion
    assert true_score(ranked[6]) > true_score(ranked[7])
    assert step2 == ranked[:7]
    assert all(r["role"] == "top-k" for r in s.selected if r["step"] == 2)
    # step 3 expands the 7 step-2 cells; every asked cell has 3 blocks
    step3 = drive(s, 7, start=28)
    ranked3 = sorted(expansions(sp, step2), key=true_score, reverse=True)
    assert step3 == ranked3[:7] and all(len(c) == 3 for c in step3)
    # after the last step: the next-ranked candidates of step 3
    assert s.info() == {"step": 3, "role": "next-ranked"}  # what the next ask returns
    assert drive(s, 3, start=35) == ranked3[7:10]


def test_popnas_asks_the_pareto_front_of_predicted_accuracy_and_time():
    sp = space()
    s = make(mode="popnas", beam=500, exploration=0, predictor="test_oracle_score",
             time_predictor="test_oracle_time")
    first = drive(s, 22)
    assert str(first[0]) == "[]" and first[1:] == sp.first_cells()
    cands = expansions(sp, first[1:])
    # brute force: the candidates no other candidate dominates
    points = [(true_score(c), true_time(c)) for c in cands]
    front = [c for c, (a, t) in zip(cands, points)
             if not any(a2 >= a and t2 <= t and (a2, t2) != (a, t) for a2, t2 in points)]
    assert len(set(points)) == len(points)
    step2 = drive(s, len(front), start=22)
    assert set(map(str, step2)) == set(map(str, front))
    assert step2 == sorted(front, key=true_score, reverse=True)  # walked best accuracy first
    assert {r["role"] for r in s.selected if r["step"] == 2} == {"pareto"}


def test_pareto_walk_limit_and_ties():
    acc = [0.9, 0.8, 0.8, 0.7, 0.95]
    times = [2.0, 1.0, 1.0, 3.0, 5.0]
    order = sorted(range(5), key=lambda i: (-acc[i], times[i], i))
    assert pareto_walk(order, acc, times, 10) == [4, 0, 1]  # 2 ties with 1, 3 is dominated
    assert pareto_walk(order, acc, times, 2) == [4, 0]


def test_popnas_time_reindex_and_exploration():
    sp = space()
    s = make(mode="popnas", beam=4, exploration=5, predictor="test_oracle_score",
             time_predictor="test_oracle_time")
    first = drive(s, 22)
    drive(s, 1, start=22)  # the first step-2 ask fits the predictors
    base = true_time(first[0])
    raw = {op: abs(true_time(sp.parse(f"[(-1, {op}, -1, {op})]")) - base) for op in OPS}
    assert s.op_scores == pytest.approx({op: raw[op] / max(raw.values()) for op in OPS})
    rows = [r for r in s.selected if r["step"] == 2]
    front = [sp.parse(r["cell"]) for r in rows if r["role"] == "pareto"]
    explore = [sp.parse(r["cell"]) for r in rows if r["role"] == "exploration"]
    assert len(front) == 4 and 1 <= len(explore) <= 5
    keys = {sp.canonical_key(c) for c in front}
    assert all(sp.canonical_key(c) not in keys for c in explore)
    # under-used values of the front (POPNASv3: count < total / (values * 5)) appear in every pick
    inputs, ops = list(sp.allowed_inputs(1)), OPS
    in_count = {i: sum(b[0] == i for c in front for b in c.blocks)
                + sum(b[2] == i for c in front for b in c.blocks) for i in inputs}
    op_count = {o: sum(b[1] == o for c in front for b in c.blocks)
                + sum(b[3] == o for c in front for b in c.blocks) for o in ops}
    rare = {i for i in inputs if in_count[i] < sum(in_count.values()) / (len(inputs) * 5)} | \
        {o for o in ops if op_count[o] < sum(op_count.values()) / (len(ops) * 5)}
    assert rare
    for c in explore:
        assert any(v in rare for b in c.blocks for v in b)
    # no exploration pick dominates another in predicted accuracy and time... after the first
    for j, c in enumerate(explore[1:], start=1):
        assert not any(true_score(e) >= true_score(c) and true_time(e) <= true_time(c)
                       for e in explore[:j])


def test_learned_predictors_pick_better_than_average_expansions():
    """The real default predictors (lstm for pnas, gin for popnas, svr for time; two ensemble
    members instead of five and 40 epochs, for time) learn the synthetic accuracy well enough that step 2's
    picks beat the mean expansion."""
    sp = space()
    for mode, extra in (("pnas", {}), ("popnas", {"exploration": 0})):
        s = make(mode=mode, beam=8, predictor_options={"members": 2, "epochs": 40}, **extra)
        first = [c for c in drive(s, 22 if mode == "popnas" else 21) if len(c)]
        picks = drive(s, 4, start=22)
        mean_all = np.mean([true_score(c) for c in expansions(sp, first)])
        assert np.mean([true_score(c) for c in picks]) > mean_all, mode


def test_resume_at_a_step_boundary_asks_the_same_cells():
    options = dict(mode="popnas", beam=5, exploration=2, time_predictor="svr",
                   predictor="gin", predictor_options={"members": 1, "epochs": 5})
    full = make(**options)
    whole = drive(full, 30)
    first = make(**options)
    part1 = drive(first, 22)  # all of step 1: the next ask fits the predictors
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    state = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    second = registry.create("strategies", "progressive", seed=0, **options)
    second.load_state_dict(state)  # before setup, as a run does
    second.setup(space(), Objective("val_acc", "max"), budget=None)
    part2 = drive(second, 8, start=22)
    assert part1 + part2 == whole
    assert second.selected == full.selected


class SyntheticEvaluator(Evaluator):
    """Scores a cell with ``true_score`` and ``true_time`` (no training)."""

    name = "synthetic"
    needs_task = False

    def evaluate(self, arch, space, task, *, seed, workdir=None):
        return result(arch)


def test_run_loop_records_each_trials_step_and_role():
    s = registry.create("strategies", "progressive", seed=0, mode="popnas", beam=3,
                        exploration=1, predictor="test_oracle_score",
                        time_predictor="test_oracle_time")
    search = Search(space=space(), strategy=s, evaluator=SyntheticEvaluator(), task=None,
                    objective=Objective("val_acc"), seed=0, store=Store(":memory:"))
    trials = search.run(Budget(trials=30))
    roles = {r["cell"]: (r["step"], r["role"]) for r in s.selected}
    assert [(t.info["step"], t.info["role"]) for t in trials[:26]] == \
        [roles[str(t.arch)] for t in trials[:26]]
    assert [t.info["role"] for t in trials[:23]] == ["empty"] + ["step1"] * 21 + ["pareto"]
    assert "exploration" in {t.info["role"] for t in trials}


def test_failed_trials_and_bad_options():
    s = make(mode="pnas", beam=3, predictor="test_oracle_score")
    for i in range(21):
        cell = s.ask(1)[0]
        res = TrialResult.failed("simulated") if i % 2 else result(cell)
        s.tell([Trial(id=i, arch=cell, result=res)])
    assert len(s.ask(3)) == 3 and s.step == 2
    with pytest.raises(ConfigError, match="needs a space with first_cells"):
        st = registry.create("strategies", "progressive")
        st.setup(registry.create("spaces", "nb201"), Objective())
    with pytest.raises(ConfigError, match="'mode' = 'darts'"):
        registry.create("strategies", "progressive", mode="darts")
    with pytest.raises(ConfigError, match="unknown predictor"):
        registry.create("strategies", "progressive", predictor="nope")
    with pytest.raises(ConfigError, match="predictor_options"):
        registry.create("strategies", "progressive", predictor_options={"membres": 2})


@pytest.mark.slow
def test_search_command_on_digits(tmp_path, capsys):
    from nasforge.testing import main_in_process

    # the CLI's main in this process (a real process would add only a Python and torch start-up)
    out = tmp_path / "run"
    capsys.readouterr()
    assert main_in_process(
        "search", "--task", "digits", "--space", "cell", "--strategy", "progressive",
        "--budget", "7", "--seed", "1", "--quiet", "--out", str(out),
        "-o", "evaluator.epochs=1", "-o", "task.limit=300", "-o", "space.blocks=2",
        "-o", "space.filters=4", "-o", "space.motifs=2", "-o", "space.normal_cells=1",
        "-o", "space.operators=[identity, 3x3 conv]", "-o", "strategy.beam=2",
        "-o", "strategy.first_step=4",
        "-o", "strategy.predictor_options={members: 1, epochs: 3}") == 0
    assert "leaderboard" in capsys.readouterr().out
    rows = (out / "progressive.csv").read_text().splitlines()
    assert rows[0] == "step,role,cell,predicted_score,predicted_time"
    assert sum(r.startswith("1,") for r in rows) == 5  # the empty cell and 4 one-block cells
    assert any(r.startswith("2,pareto") for r in rows)
    for name in ("best/model.onnx", "best/arch.txt", "report.html", "trials.csv"):
        assert (out / name).exists(), name
    arch = (out / "best" / "arch.txt").read_text().strip()
    CellSpace(blocks=2, operators=["identity", "3x3 conv"]).parse(arch)


@pytest.mark.parametrize("name, options", [
    ("random", {}), ("evolution", {}), ("optuna", {}),
    ("progressive", {"mode": "popnas", "beam": 3, "exploration": 1,
                     "predictor": "test_oracle_score", "time_predictor": "test_oracle_time"})])
def test_benchmark_baselines_run_on_the_cell_space_deterministically(name, options):
    """The strategies benchmarks/progressive_digits.py compares search the cell space through
    sample / mutate / the sequential view, and with a deterministic evaluator a seed fixes every
    cell asked (``--merge`` reuses earlier runs; popnas with real training is the exception, its
    time objective is a measured time); another seed asks other cells."""
    if name == "optuna":
        pytest.importorskip("optuna")

    def asked(seed):
        s = registry.create("strategies", name, seed=seed, **options)
        sp = space()
        trials = Search(space=sp, strategy=s, evaluator=SyntheticEvaluator(), task=None,
                        objective=Objective("val_acc"), seed=seed, store=Store(":memory:")
                        ).run(Budget(trials=26))
        for t in trials:
            assert t.result.status == "ok" and sp.parse(str(t.arch)) == t.arch
            assert 1 <= len(t.arch) <= 3 or (name == "progressive" and len(t.arch) == 0)
            assert {b[1] for b in t.arch.blocks} | {b[3] for b in t.arch.blocks} <= set(OPS)
        return [str(t.arch) for t in trials]

    first = asked(0)
    assert len(first) == 26 and len(set(first)) >= 20
    assert asked(0) == first
    if name != "progressive":  # step 1 of progressive is every one-block cell, in a fixed order
        assert asked(1) != first
