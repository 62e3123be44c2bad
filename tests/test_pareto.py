"""Pareto tools and multi-objective selection, checked against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nasforge.core import Constraint, Objective, Objectives, TrialResult, best_trial, Trial
from nasforge.pareto import (crowded_order, crowding_distance, dominates, hypervolume,
                             hypervolume_curve, non_dominated_sort, rank_and_crowding)
from nasforge.testing import ToyArch


def test_dominance_and_sorting_known_fronts():
    assert dominates((2, 2), (1, 2)) and not dominates((1, 2), (1, 2))
    assert not dominates((3, 1), (1, 3))
    pts = [(1, 1), (2, 2), (3, 1), (1, 3), (0, 0), (2, 2)]
    assert non_dominated_sort(pts) == [[1, 2, 3, 5], [0], [4]]
    assert non_dominated_sort([]) == []


def test_front_matches_brute_force_with_ties_and_three_objectives():
    from nasforge.pareto import pareto_indices

    rng = np.random.default_rng(1)  # generated points on a coarse grid, so ties are common
    for _ in range(100):
        pts = rng.integers(0, 4, (int(rng.integers(1, 25)), int(rng.integers(1, 4)))).tolist()
        brute = [i for i, p in enumerate(pts) if not any(dominates(q, p) for q in pts)]
        assert pareto_indices(pts) == brute
    assert non_dominated_sort([(1, 1), (2, 2), (0, 0), (3, 3)], limit=2) == [[3], [1]]


def test_crowding_distance_hand_computed():
    pts = [(1, 3), (2, 2), (3, 1), (2.5, 1.5)]
    d = crowding_distance(pts, [0, 1, 2, 3])
    assert d[0] == math.inf and d[2] == math.inf
    # (2,2): neighbours (1,3) and (2.5,1.5) in both objectives: (2.5-1)/2 + (3-1.5)/2 = 1.5
    assert d[1] == pytest.approx(1.5)
    # (2.5,1.5): neighbours (2,2) and (3,1) in both objectives: 1/2 + 1/2
    assert d[3] == pytest.approx(1.0)
    rank, crowd = rank_and_crowding(pts + [(0, 0)])
    assert rank == [0, 0, 0, 0, 1]
    assert crowded_order(pts + [(0, 0)]) == [0, 2, 1, 3, 4]


def test_hypervolume_2d_and_3d_known_values():
    assert hypervolume([(1, 3), (2, 2), (3, 1)], (0, 0)) == pytest.approx(6.0)
    # dominated and out-of-box points add nothing
    assert hypervolume([(1, 3), (2, 2), (3, 1), (1, 1), (-1, 9)], (0, 0)) == pytest.approx(6.0)
    assert hypervolume([(3, 1)], (1, 0)) == pytest.approx(2.0)
    assert hypervolume([], (0, 0)) == 0.0
    # inclusion-exclusion: 3 boxes of volume 2, pairwise and triple overlaps of volume 1 -> 4
    assert hypervolume([(2, 1, 1), (1, 2, 1), (1, 1, 2)], (0, 0, 0)) == pytest.approx(4.0)
    assert hypervolume([(2, 1, 1), (1, 2, 1)], (0, 0, 0)) == pytest.approx(3.0)


def test_hypervolume_3d_matches_monte_carlo():
    rng = np.random.default_rng(0)  # generated points, fixed seed
    pts = rng.random((12, 3))
    exact = hypervolume(pts.tolist(), (0, 0, 0))
    samples = rng.random((200_000, 3))
    covered = np.zeros(len(samples), dtype=bool)
    for p in pts:
        covered |= np.all(samples <= p, axis=1)
    assert exact == pytest.approx(covered.mean(), abs=0.01)


def test_hypervolume_curve_is_monotone_and_ends_at_total():
    pts = [(1, 1), None, (1, 3), (3, 1), (2, 2), (0.5, 0.5)]
    curve = hypervolume_curve(pts, (0, 0))
    assert curve == pytest.approx([1, 1, 3, 5, 6, 6])


def _res(acc, params, status="ok"):
    return TrialResult(status=status, metrics={"val_acc": acc}, cost={"params": params})


def test_constraint_parse_and_check():
    c = Constraint.parse("params<=50000")
    assert (c.metric, c.op, c.bound) == ("params", "<=", 50000.0)
    assert c.satisfied(_res(0.9, 50000)) and not c.satisfied(_res(0.9, 50001))
    assert Constraint.parse(" val_acc > 0.5 ").satisfied(_res(0.6, 1))
    assert not Constraint.parse("flops<1").satisfied(_res(0.6, 1))  # missing metric breaks it
    for bad in ("params=<5", "params<=abc", "<=5", "params<=inf"):
        with pytest.raises(ValueError):
            Constraint.parse(bad)


def test_objectives_front_best_and_ties_by_params():
    obj = Objectives(["max:val_acc", "min:params"], ["params<=1000"])
    trials = [Trial(i, ToyArch(str(i)), r) for i, r in enumerate(
        [_res(0.9, 500), _res(1.0, 800), _res(1.0, 600), _res(0.8, 100), _res(1.0, 2000),
         _res(0.85, 700), _res(0.99, 900, "failed")])]
    assert [t.id for t in obj.front(trials)] == [0, 2, 3]  # trial 4 breaks the constraint
    assert obj.best(trials).id == 2  # highest val_acc, tie broken by fewer params
    assert obj.scores(trials[4].result) is None and not obj.feasible(trials[4].result)
    # single objective: ties broken by fewer params, not trial order
    assert best_trial(trials[:5], Objective("val_acc")).id == 2
    assert [t.id for t in obj.ranked(trials)] == [2, 0, 3, 1, 5]
    # scalarisation: val_acc - 0.05 * log10(params)
    assert obj.scalar(trials[0].result) == pytest.approx(0.9 - 0.05 * math.log10(500))
    assert Objectives(["max:val_acc"]).scalar(trials[0].result) == pytest.approx(0.9)


def test_objectives_from_config_old_and_new():
    assert [str(o) for o in Objectives.from_config({"objective": "max:val_acc"})] == ["max:val_acc"]
    o = Objectives.from_config({"objective": ["max:val_acc", "min:params"],
                                "constraints": ["params<=5"]})
    assert o.multi and o.metric_names() == ["val_acc", "params"]
    with pytest.raises(ValueError, match="twice"):
        Objectives(["max:val_acc", "min:val_acc"])


# -- strategies with several objectives ---------------------------------------------------------

from nasforge.core import Evaluator  # noqa: E402
from nasforge.run.loop import Budget, Search  # noqa: E402
from nasforge.run.store import Store  # noqa: E402
from nasforge.strategies.evolution import RegularizedEvolution  # noqa: E402
from nasforge.strategies.local import LocalSearch  # noqa: E402
from nasforge.testing import ToySpace  # noqa: E402

TWO = Objectives(["max:val_acc", "min:params"])


class TradeOff(Evaluator):
    """Accuracy grows with the sum of the decisions, and so do the parameters (a real trade-off),
    except that decision 3 is free: architectures made of 3s dominate."""

    name = "tradeoff"

    def evaluate(self, arch, space, task, *, seed, workdir=None):
        v = arch.values
        return TrialResult(metrics={"val_acc": sum(v) / (4 * len(v))},
                           cost={"params": 1000.0 + sum(100 * x for x in v if x != 3)})


def _trial(i, values, acc, params):
    return Trial(i, ToyArch(values), _res(acc, params))


def test_evolution_tournament_and_removal_use_pareto_rank():
    told = [_trial(0, (2, 2, 2), 0.6, 400), _trial(1, (1, 1, 1), 0.5, 500),
            _trial(2, (3, 3, 3), 0.9, 900), _trial(3, (4, 4, 4), 0.3, 100)]
    ev = RegularizedEvolution(seed=0, population_size=3, sample_size=3)
    ev.setup(ToySpace(), TWO)
    ev.tell(told)
    # (1,1,1) is dominated by (2,2,2): it dies, although (2,2,2) is older
    assert [str(a) for a, _ in ev.population] == ["2-2-2", "3-3-3", "4-4-4"]
    # all three drawn: the front's extremes (crowding inf) beat the middle; the older one wins
    assert str(ev._select()) == "3-3-3"
    # aging with several objectives on request: the oldest dies
    old = RegularizedEvolution(seed=0, population_size=3, sample_size=3, removal="oldest")
    old.setup(ToySpace(), TWO)
    old.tell(told)
    assert [str(a) for a, _ in old.population] == ["1-1-1", "3-3-3", "4-4-4"]
    # constraints: a trial that breaks one never joins the population
    con = RegularizedEvolution(seed=0, population_size=5)
    con.setup(ToySpace(), Objectives(["max:val_acc", "min:params"], ["params<=600"]))
    con.tell([_trial(0, (1, 1, 1), 0.5, 500), _trial(1, (3, 3, 3), 0.9, 900)])
    assert [str(a) for a, _ in con.population] == ["1-1-1"]


def test_evolution_state_round_trip_with_vectors():
    ev = RegularizedEvolution(seed=1, population_size=4, sample_size=2)
    ev.setup(ToySpace(), TWO)
    ev.ask(4)
    ev.tell([_trial(i, (i, 1, 1), 0.1 * i, 100 * (4 - i)) for i in range(4)])
    state = ev.state_dict()
    other = RegularizedEvolution(seed=1, population_size=4, sample_size=2)
    other.setup(ToySpace(), TWO)
    other.load_state_dict(state)
    assert list(other.population) == list(ev.population)
    assert [str(a) for a in other.ask(5)] == [str(a) for a in ev.ask(5)]


def test_local_search_accepts_only_dominating_neighbours():
    ls = LocalSearch(seed=0, mutations=2)
    ls.setup(ToySpace(), TWO)
    start = ls.ask(1)[0]
    ls.tell([Trial(0, start, _res(0.5, 500))])
    n1, n2 = ls.ask(2)
    # n1 trades accuracy for size (no dominance), n2 dominates the start: move to n2
    ls.tell([Trial(1, n1, _res(0.6, 600)), Trial(2, n2, _res(0.55, 400))])
    ls.ask(1)
    assert ls.current == str(n2) and ls.moves == 1
    # a neighbourhood with trade-offs only: restart
    ls2 = LocalSearch(seed=0, mutations=2)
    ls2.setup(ToySpace(), TWO)
    s = ls2.ask(1)[0]
    ls2.tell([Trial(0, s, _res(0.5, 500))])
    m1, m2 = ls2.ask(2)
    ls2.tell([Trial(1, m1, _res(0.6, 600)), Trial(2, m2, _res(0.4, 300))])
    ls2.ask(1)
    assert ls2.restarts == 1 and ls2.moves == 0


@pytest.mark.parametrize("name", ["random", "evolution", "local", "qlearning", "reinforce"])
def test_every_strategy_runs_with_two_objectives_and_a_constraint(name):
    from nasforge import registry

    objs = Objectives(["max:val_acc", "min:params"], ["params<=1600"])
    strategy = registry.create("strategies", name, seed=0)
    search = Search(space=ToySpace(), strategy=strategy, evaluator=TradeOff(), task=None,
                    objective=objs, store=Store())
    trials = search.run(Budget(trials=15))
    assert len(trials) == 15
    front = objs.front(trials)
    assert front and all(t.result.cost["params"] <= 1600 for t in front)
    best = search.best
    assert best in front and objs.feasible(best.result)


def test_reward_is_the_documented_scalarisation():
    from nasforge.strategies.random import RandomSearch

    s = RandomSearch(seed=0)
    s.setup(ToySpace(), Objectives(["max:val_acc", "min:params"], ["params<=700"]))
    assert s.reward(_trial(0, (1, 1, 1), 0.8, 100)) == pytest.approx(0.8 - 0.05 * 2)
    assert s.reward(_trial(0, (1, 1, 1), 0.8, 1000)) is None  # breaks the constraint
    assert s.objective == Objective("val_acc", "max")  # the first objective, as before


def test_evolution_beats_random_hypervolume_on_tradeoff_space():
    """Evolution's Pareto selection finds the dominating region (3s) faster than random."""
    from nasforge import registry

    space = ToySpace(length=6, width=5)
    hv = {}
    for name in ("random", "evolution"):
        vals = []
        for seed in range(5):
            search = Search(space=space, strategy=registry.create("strategies", name, seed=seed,
                            **({"population_size": 10, "sample_size": 3} if name == "evolution" else {})),
                            evaluator=TradeOff(), task=None, objective=TWO, store=Store(), seed=seed)
            trials = search.run(Budget(trials=60))
            pts = [TWO.scores(t.result) for t in trials]
            vals.append(hypervolume([p for p in pts if p], (0.0, -4000.0)))
        hv[name] = float(np.mean(vals))
    assert hv["evolution"] > hv["random"]


def test_unknown_objective_metric_is_refused():
    from nasforge.core import check_metrics
    from nasforge.errors import ConfigError, RunError
    from nasforge.evaluators.train import TrainEvaluator

    with pytest.raises(ConfigError, match="'val_accc' is not reported by evaluator 'train'"):
        check_metrics(Objectives(["max:val_accc"]), TrainEvaluator())
    check_metrics(Objectives(["max:val_acc", "min:latency_ms"], ["flops<=1e6"]), TrainEvaluator())
    # evaluators that declare nothing: refused after the first ok trial
    from nasforge.strategies.random import RandomSearch

    search = Search(space=ToySpace(), strategy=RandomSearch(seed=0), evaluator=TradeOff(),
                    task=None, objective=Objectives(["max:val_acc", "min:flops"]), store=Store())
    with pytest.raises(RunError, match="'flops' is not reported by evaluator 'tradeoff'"):
        search.run(Budget(trials=5))
    assert len(search.trials) == 1
