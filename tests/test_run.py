"""The store, the search loop, executors and resume, on the toy space (no training)."""

from __future__ import annotations

import pytest

from nasforge import registry
from nasforge.core import Objective, Trial, TrialResult
from nasforge.errors import RunError
from nasforge.run.executors import ProcessExecutor
from nasforge.run.loop import Budget, Search, regret_curve
from nasforge.run.store import RunLock, Store
from nasforge.testing import FunctionalEvaluator, ToySpace


def make_search(store: Store, *, seed: int = 0, strategy: str = "random", evaluator=None,
                executor=None, batch: int = 1, **kwargs) -> Search:
    space = ToySpace()
    strat = registry.create("strategies", strategy, seed=seed)
    extra = {"executor": executor} if executor is not None else {}
    return Search(space=space, strategy=strat, evaluator=evaluator or FunctionalEvaluator(),
                  task=None, objective=Objective("val_acc"), seed=seed, store=store, batch=batch,
                  **extra, **kwargs)


def summary(trials):
    return [(t.id, str(t.arch), t.status, t.metrics.get("val_acc"), t.seed) for t in trials]


def test_store_round_trip(tmp_path):
    store = Store(tmp_path / "run.db")
    space = ToySpace()
    arch = space.parse("1-2-3")
    store.add_trial(Trial(id=0, arch=arch, seed=5, info={"epsilon": 1.0},
                          result=TrialResult(metrics={"val_acc": 0.5}, curves={"val_acc": [0.1, 0.5]},
                                             cost={"params": 10.0})))
    store.add_trial(Trial(id=1, arch=arch, result=TrialResult.failed("boom")))
    store.save_checkpoint(2, {"strategy": {"rng": {"a": 1}}, "x": [1, 2]})
    store.close()
    store = Store(tmp_path / "run.db")
    trials = store.trials(space)
    assert [t.status for t in trials] == ["ok", "failed"]
    assert trials[0].arch == arch and trials[0].info == {"epsilon": 1.0} and trials[0].seed == 5
    assert trials[0].result.curves == {"val_acc": [0.1, 0.5]}
    assert trials[1].result.reason == "boom"
    step, state = store.latest_checkpoint()
    assert step == 2 and state["x"] == [1, 2]
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_checkpoints_keep_only_newest(tmp_path):
    store = Store(tmp_path / "run.db")
    for step in range(6):
        store.save_checkpoint(step, {"step": step}, keep=2)
    assert store.conn.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0] == 2
    assert store.latest_checkpoint()[1] == {"step": 5}


def test_lock_refuses_second_holder(tmp_path):
    first = RunLock(tmp_path)
    first.acquire()
    with pytest.raises(RunError, match="in use"):
        RunLock(tmp_path).acquire()
    first.release()
    again = RunLock(tmp_path)
    again.acquire()
    again.release()


def test_search_respects_trial_budget_and_records_failures():
    search = make_search(Store(), evaluator=FunctionalEvaluator(fail_if_contains="4"))
    trials = search.run(Budget(trials=25))
    assert len(trials) == 25 == search.store.count()
    failed = [t for t in trials if t.status == "failed"]
    assert failed and all("simulated failure" in t.result.reason for t in failed)
    assert all("4" in str(t.arch) for t in failed)
    curve = regret_curve(trials, Objective("val_acc"))
    assert all(b >= a for a, b in zip(curve, curve[1:]) if a == a)


def test_search_cost_and_time_budgets():
    search = make_search(Store())
    trials = search.run(Budget(cost=55.0))  # 10 simulated seconds per trial
    assert len(trials) == 6
    search = make_search(Store(), evaluator=FunctionalEvaluator(delay=0.05))
    trials = search.run(Budget(seconds=0.3))
    assert 3 <= len(trials) <= 8


def test_bad_budget_refused():
    with pytest.raises(RunError, match="needs a budget"):
        Budget()
    with pytest.raises(RunError, match="positive"):
        Budget(trials=0)


class Crash(Exception):
    pass


@pytest.mark.parametrize("strategy", ["random", "evolution"])
def test_resume_after_crash_equals_uninterrupted(tmp_path, strategy):
    if strategy not in registry.available("strategies"):
        pytest.skip(f"{strategy} not available")
    full = make_search(Store(), strategy=strategy, seed=4, batch=3).run(Budget(trials=20))

    evaluated = []

    def crash_after(search, trial):
        evaluated.append(trial.id)
        if len(evaluated) == 8:  # mid-batch: trials 6, 7 are stored, 8 never finishes
            raise Crash()

    store = Store(tmp_path / "run.db")
    with pytest.raises(Crash):
        make_search(store, strategy=strategy, seed=4, batch=3, on_trial=[crash_after]).run(Budget(trials=20))
    store.close()
    assert len(evaluated) == 8

    again = []
    store = Store(tmp_path / "run.db")
    resumed = make_search(store, strategy=strategy, seed=4, batch=3,
                          on_trial=[lambda s, t: again.append(t.id)]).run(Budget(trials=20))
    assert summary(resumed) == summary(full)
    assert not set(again) & set(evaluated)  # nothing finished is evaluated twice
    assert sorted(evaluated + again) == list(range(20))


def test_resume_with_different_strategy_proposals_is_refused(tmp_path):
    store = Store(tmp_path / "run.db")
    make_search(store, seed=1).run(Budget(trials=5))
    store.conn.execute("DELETE FROM checkpoints")  # as if no checkpoint: strategy restarts
    with pytest.raises(RunError, match="cannot resume|inconsistent"):
        make_search(store, seed=2).run(Budget(trials=8))


def test_process_executor_gives_same_results_as_local():
    local = make_search(Store(), seed=9, batch=2).run(Budget(trials=8))
    pooled = make_search(Store(), seed=9, batch=2, executor=ProcessExecutor(workers=2)).run(Budget(trials=8))
    assert summary(local) == summary(pooled)


class ExplodingEvaluator(FunctionalEvaluator):
    def evaluate(self, arch, space, task, *, seed, workdir=None):
        if str(arch).startswith("3"):
            raise RuntimeError("evaluator bug")
        return super().evaluate(arch, space, task, seed=seed, workdir=workdir)


def test_evaluator_exception_becomes_failed_trial():
    trials = make_search(Store(), evaluator=ExplodingEvaluator()).run(Budget(trials=30))
    bad = [t for t in trials if str(t.arch).startswith("3")]
    assert bad and all(t.status == "failed" and "evaluator bug" in t.result.reason for t in bad)
