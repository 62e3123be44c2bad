"""The run option ``repeats``: a proposal equal to an architecture the search already evaluated is
evaluated again (``evaluate``, the default) or recorded with the earlier result (``reuse``).

A strategy that repeats on purpose and an evaluator that counts its calls (with seed noise, as
training has) show what each value does, in batch and asynchronous mode, through kill and
resume, in the report and ``best/``, and from the config and the CLI.
"""

from __future__ import annotations

import collections
import json

import pytest

from nasforge import registry
from nasforge.core import REUSES, Objective, Strategy, Trial, TrialResult, reused_from
from nasforge.errors import ConfigError, RunError
from nasforge.run.executors import Executor
from nasforge.run.loop import Budget, Search
from nasforge.run.store import Store
from nasforge.testing import FunctionalEvaluator, ToySpace, toy_score

CYCLE = ["1-2-3", "0-2-4", "1-2-3", "3-3-3", "0-2-4", "1-2-3"]  # 3 architectures, 6 proposals


class Repeating(Strategy):
    """Asks the texts of ``cycle`` in turn (so each comes back); keeps what it is told."""

    name = "repeating"

    def __init__(self, cycle=CYCLE, *, seed: int = 0):
        super().__init__(seed=seed)
        self.cycle = list(cycle)
        self.pos = 0
        self.told: list[tuple[int, str, float | None]] = []

    def ask(self, n: int = 1):
        space = self._require_space()
        out = [space.parse(self.cycle[(self.pos + i) % len(self.cycle)]) for i in range(n)]
        self.pos += n
        return out

    def tell(self, trials) -> None:
        self.told += [(t.id, str(t.arch), t.metrics.get("val_acc")) for t in trials]

    def state_dict(self):
        return {**super().state_dict(), "pos": self.pos}

    def load_state_dict(self, state) -> None:
        super().load_state_dict(state)
        self.pos = int(state["pos"])


class Counting(FunctionalEvaluator):
    """``toy_score`` plus seed noise (a retraining scores differently); counts calls per arch.
    ``fail_first``: the first evaluation of each architecture in it fails."""

    def __init__(self, fail_first: tuple[str, ...] = ()):
        super().__init__()
        self.calls: collections.Counter[str] = collections.Counter()
        self.fail_first = fail_first

    def evaluate(self, arch, space, task, *, seed, workdir=None):
        self.calls[str(arch)] += 1
        if str(arch) in self.fail_first and self.calls[str(arch)] == 1:
            return TrialResult.failed(f"first try of {arch} fails")
        result = super().evaluate(arch, space, task, seed=seed, workdir=workdir)
        result.metrics["val_acc"] = toy_score(arch) + (seed % 997) / 1e4
        return result


class LastFirst(Executor):
    """``workers`` simulated workers that finish the newest job first: results out of order,
    deterministically, with no waiting (so a repeat can be asked while its original runs)."""

    def __init__(self, workers: int = 2):
        self.workers = workers
        self._jobs: list = []

    def submit(self, job) -> None:
        self._jobs.append(job)

    def next_done(self):
        job = self._jobs.pop()
        return job, self.evaluator.evaluate(self.space.parse(job.arch), self.space, None,
                                            seed=job.seed)

    def pending(self) -> int:
        return len(self._jobs)


class SymmetricToy(ToySpace):
    """The toy space where an architecture and its reverse compute the same (``canonical_key``)."""

    def canonical_key(self, arch) -> str:
        return "-".join(sorted(str(arch).split("-")))


def make(store=None, *, repeats="evaluate", evaluator=None, cycle=CYCLE, space=None, **kw) -> Search:
    return Search(space=space or ToySpace(), strategy=Repeating(cycle), evaluator=evaluator or Counting(),
                  task=None, objective=Objective("val_acc"), seed=5,
                  store=store if store is not None else Store(), repeats=repeats, **kw)


def summary(trials):
    return [(t.id, str(t.arch), t.status, t.metrics.get("val_acc"), t.seed, t.info.get(REUSES))
            for t in trials]


# -- what each value does -----------------------------------------------------------------------
@pytest.mark.parametrize("mode,batch", [("batch", 1), ("batch", 3), ("async", 1)])
def test_reuse_evaluates_each_architecture_once_evaluate_twice(mode, batch):
    runs = {}
    for repeats in ("evaluate", "reuse"):
        ev = Counting()
        search = make(repeats=repeats, evaluator=ev, mode=mode, batch=batch)
        trials = search.run(Budget(trials=12))  # the cycle twice: each architecture 4 times
        runs[repeats] = (ev.calls, trials, search)
    calls, trials, search = runs["evaluate"]
    assert calls == {"1-2-3": 6, "0-2-4": 4, "3-3-3": 2}  # every proposal trained again
    first = {a: t for t in reversed(trials) for a in [str(t.arch)]}  # earliest trial per arch
    assert any(t.metrics["val_acc"] != first[str(t.arch)].metrics["val_acc"] for t in trials)
    assert not any(REUSES in t.info for t in trials)

    calls, trials, search = runs["reuse"]
    assert calls == {"1-2-3": 1, "0-2-4": 1, "3-3-3": 1}
    assert len(trials) == 12 and sorted(t.id for t in trials) == list(range(12))  # 12 of budget
    by_id = {t.id: t for t in trials}
    for t in trials:
        src = first[str(t.arch)]
        if t.id == src.id:
            assert reused_from(t) is None
        else:  # the earlier result, its seed, and the trial it came from
            assert t.info[REUSES] == src.id and t.result.metrics == src.result.metrics
            assert t.result.cost == src.result.cost and t.seed == src.seed
    assert [by_id[i].info.get(REUSES) for i in range(6)] == [None, None, 0, None, 1, 0]
    # the strategy was told every trial, reused ones with the earlier result
    assert [(i, a, v) for i, a, v in search.strategy.told] == \
        [(t.id, str(t.arch), t.metrics["val_acc"]) for t in trials]
    # the best is the evaluated trial, never its reuse (same score: the earlier trial wins)
    assert reused_from(search.best) is None
    stored = search.store.trials(ToySpace())
    assert summary(sorted(stored, key=lambda t: t.id)) == summary(sorted(trials, key=lambda t: t.id))


def test_evaluate_is_the_default_and_unchanged():
    a = Search(space=ToySpace(), strategy=Repeating(), evaluator=Counting(), task=None,
               objective=Objective("val_acc"), seed=5, store=Store()).run(Budget(trials=8))
    b = make(repeats="evaluate").run(Budget(trials=8))
    assert summary(a) == summary(b)


def test_a_failed_original_is_evaluated_again_then_reused():
    ev = Counting(fail_first=("1-2-3",))
    trials = make(repeats="reuse", evaluator=ev).run(Budget(trials=6))
    assert ev.calls["1-2-3"] == 2  # trial 0 failed, trial 2 evaluated, trial 5 reuses trial 2
    assert [t.status for t in trials if str(t.arch) == "1-2-3"] == ["failed", "ok", "ok"]
    assert trials[5].info[REUSES] == 2 and trials[2].info.get(REUSES) is None


def test_in_one_batch_equal_proposals_wait_for_the_first():
    ev = Counting(fail_first=("1-2-3",))
    cycle = ["1-2-3", "1-2-3", "1-2-3", "0-2-4"]
    trials = make(repeats="reuse", evaluator=ev, cycle=cycle, mode="batch", batch=4).run(Budget(trials=4))
    # trial 0 fails, so trial 1 is evaluated in a second round and trial 2 reuses it
    assert ev.calls == {"1-2-3": 2, "0-2-4": 1}
    assert [t.id for t in trials] == [0, 1, 2, 3]  # told in the order asked
    assert [t.info.get(REUSES) for t in trials] == [None, None, 1, None]


def test_async_repeat_of_a_running_trial_waits_for_it():
    ev = Counting()
    executor = LastFirst(2)
    trials = make(repeats="reuse", evaluator=ev, mode="async", executor=executor,
                  cycle=["1-2-3", "1-2-3", "0-2-4", "3-3-3"]).run(Budget(trials=8))
    assert ev.calls == {"1-2-3": 1, "0-2-4": 1, "3-3-3": 1}
    assert sorted(t.id for t in trials) == list(range(8))
    told = [t.id for t in trials]
    assert told.index(1) > told.index(0)  # trial 1 (asked while 0 ran) waited and reused it
    assert {t.id: t.info.get(REUSES) for t in trials}[1] == 0


def test_canonical_key_decides_what_is_equal():
    ev = Counting()
    trials = make(repeats="reuse", evaluator=ev, space=SymmetricToy(),
                  cycle=["1-2-3", "3-2-1", "2-1-3"]).run(Budget(trials=3))
    assert ev.calls == {"1-2-3": 1}
    assert [str(t.arch) for t in trials] == ["1-2-3", "3-2-1", "2-1-3"]  # the text asked is kept
    assert [t.info.get(REUSES) for t in trials] == [None, 0, 0]


def test_cost_budget_counts_reused_trials_so_a_repeating_strategy_ends():
    ev = Counting()
    trials = make(repeats="reuse", evaluator=ev, cycle=["1-2-3"]).run(Budget(cost=55.0))
    assert len(trials) == 6 and ev.calls == {"1-2-3": 1}  # 10 simulated seconds per trial


def test_bad_repeats_value_is_refused():
    for bad in ("reuse-once", "", None, 1):
        with pytest.raises(RunError, match=r"repeats = .*expected one of evaluate, reuse"):
            make(repeats=bad)
    from nasforge.config import load_config

    with pytest.raises(ConfigError) as info:
        load_config(None, {"repeats": "skip"})
    assert "repeats = 'skip': expected one of evaluate, reuse" in str(info.value)
    assert load_config(None, {}).repeats == "evaluate"


# -- resume ---------------------------------------------------------------------------------------
class Crash(Exception):
    pass


@pytest.mark.parametrize("mode,batch,crash_at", [("batch", 3, 4), ("batch", 3, 6), ("batch", 1, 3),
                                                  ("async", 1, 5), ("async", 2, 5), ("async", 2, 3)])
def test_reuse_resume_after_crash_equals_uninterrupted(tmp_path, mode, batch, crash_at):
    """Killed after ``crash_at`` stored trials (reused ones included: trial 2 is the first reuse),
    before they were told: the resumed run equals the uninterrupted one and nothing is evaluated
    twice."""
    cycle = CYCLE + ["4-4-4", "0-0-2"]

    def search(store, ev, **kw):
        extra = {"executor": LastFirst(batch)} if mode == "async" else {"batch": batch}
        return make(store, repeats="reuse", evaluator=ev, cycle=cycle, mode=mode, **extra, **kw)

    ev_full = Counting()
    full = search(Store(), ev_full).run(Budget(trials=16))

    stored_ids: list[int] = []

    def crash(s, trial):
        stored_ids.append(trial.id)
        if len(stored_ids) == crash_at:
            raise Crash()

    ev_first, ev_again = Counting(), Counting()
    store = Store(tmp_path / "run.db")
    with pytest.raises(Crash):
        search(store, ev_first, on_trial=[crash]).run(Budget(trials=16))
    store.close()
    store = Store(tmp_path / "run.db")
    resumed = search(store, ev_again).run(Budget(trials=16))
    key = lambda t: t.id  # noqa: E731
    if mode == "batch" or batch == 1:  # told in the same order too
        assert summary(resumed) == summary(full)
    assert summary(sorted(resumed, key=key)) == summary(sorted(full, key=key))
    assert summary(sorted(store.trials(ToySpace()), key=key)) == summary(sorted(full, key=key))
    assert ev_first.calls + ev_again.calls == ev_full.calls  # nothing evaluated twice
    assert max(ev_full.calls.values()) == 1


# -- report, best/, config, CLI -------------------------------------------------------------------
def test_report_and_best_count_a_reused_result_once(tmp_path):
    from nasforge.core import Objectives
    from nasforge.report import leaderboard, write_html, write_trials_csv
    from nasforge.report.front import front_summary
    from nasforge.run.best import BestKeeper

    objs = Objectives(["max:val_acc", "min:params"])
    store = Store()
    keeper = BestKeeper(tmp_path / "best", objs)
    make(store, repeats="reuse", on_trial=[lambda s, t: keeper.add(t)]).run(Budget(trials=12))
    rows = list(store.rows())
    assert len(rows) == 12
    board = leaderboard(rows, objs, top=None)
    assert sorted(r["arch"] for r in board) == ["0-2-4", "1-2-3", "3-3-3"]  # once each
    summary_ = front_summary(rows, objs)
    assert summary_["trials"] == 12 and summary_["feasible"] == 3
    assert all(reused_from(next(r for r in rows if r["id"] == m["trial"])) is None
               for m in summary_["front"])
    front = json.loads((tmp_path / "best" / "front.json").read_text())
    assert sorted(m["trial"] for m in front["members"]) == sorted(m["trial"] for m in summary_["front"])
    assert BestKeeper(tmp_path / "b2", objs, rows).front == keeper.front  # same when reloaded
    write_trials_csv(rows, objs, tmp_path / "trials.csv")
    import csv

    with open(tmp_path / "trials.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["reuses"] for r in table][:6] == ["", "", "0", "", "1", "0"]
    assert all(r["pareto"] == "0" for r in table if r["reuses"])
    page = write_html(tmp_path, rows, objs, {}).read_text()
    assert "12 trials (12 ok, 0 failed, 9 of them reuse an earlier trial" in page


def test_run_option_from_cli_bad_value_and_fixed_on_resume(tmp_path, capsys):
    from nasforge.bench_tables import make_nb201_table
    from nasforge.testing import main_in_process

    table = make_nb201_table(tmp_path / "nb201.csv", seed=0)

    def cli(*args):
        return (main_in_process(*args), *capsys.readouterr())

    common = ["search", "--space", "nb201", "--evaluator", f"table:{table}", "--objective",
              "max:cifar10-val", "-o", "evaluator.search_metric=cifar10-val", "--strategy",
              "evolution", "-o", "strategy.population_size=4", "-o", "strategy.sample_size=2",
              "--seed", "1", "--quiet", "--no-export"]
    code, out, err = cli(*common, "--budget", "3", "--repeats", "sometimes", "--out", str(tmp_path / "bad"))
    assert code == 2 and "Traceback" not in err
    assert "repeats = 'sometimes': expected one of evaluate, reuse" in err
    assert not (tmp_path / "bad").exists()

    code, out, err = cli(*common, "--budget", "40", "--repeats", "reuse", "--out", str(tmp_path / "r"))
    assert code == 0, err
    assert "repeats reuse earlier results" in out
    from nasforge.run.rundir import open_rows

    rows, cfg = open_rows(tmp_path / "r")
    assert cfg["repeats"] == "reuse" and len(rows) == 40
    keys = [r["arch"] for r in rows if reused_from(r) is None and r["status"] == "ok"]
    assert len(keys) == len(set(keys))  # no architecture evaluated twice
    reused = [r for r in rows if reused_from(r) is not None]
    assert reused, "evolution on this small budget repeats some architectures"
    by_id = {r["id"]: r for r in rows}
    assert all(by_id[reused_from(r)]["metrics"] == r["metrics"] for r in reused)
    assert f"(result of trial {reused_from(reused[0])}, not evaluated again)" in out

    code, out, err = cli("search", "--resume", str(tmp_path / "r"), "--repeats", "evaluate", "--quiet")
    assert code == 2 and "repeats: run has 'reuse', flag says 'evaluate'" in err
    code, out, err = cli("search", "--resume", str(tmp_path / "r"), "--repeats", "reuse",
                         "--budget", "44", "--quiet", "--no-export")
    assert code == 0, err
    assert len(open_rows(tmp_path / "r")[0]) == 44


@registry.register("evaluators", "counting_epochs")
class CountingEpochs(Counting):
    """``Counting`` with an ``epochs`` option for ``sequential_halving`` to scale."""

    def __init__(self, epochs: int = 2):
        super().__init__()
        self.epochs = epochs


def test_sequential_halving_promotes_distinct_evaluations_only():
    from nasforge.methods import MethodContext, run_method

    ctx = MethodContext(task=None, space=SymmetricToy(), evaluator=CountingEpochs(),
                        objective=Objective("val_acc"), seed=5, store=Store(),
                        budget=Budget(trials=5), evaluator_name="counting_epochs",
                        strategy=Repeating(["1-2-3", "3-2-1", "0-2-4", "3-3-3", "4-4-4"]),
                        repeats="reuse")
    trials = run_method(registry.create("methods", "sequential_halving", top_k=5), ctx)
    search = {t.id: t for t in trials if "rung" not in t.info}
    assert search[1].info[REUSES] == 0  # 3-2-1 computes what 1-2-3 does
    rung1 = [t for t in trials if t.info.get("rung") == 1]
    assert sorted(t.info["source_trial"] for t in rung1) == [0, 2, 3, 4]  # 4 of top_k 5: not trial 1
