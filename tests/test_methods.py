"""Methods and the multi-trial loop's modes, on the toy space (no training): the store's
per-method checkpoints and schema migration, asynchronous workers and their resume contract."""

from __future__ import annotations

import sqlite3
import zlib

import pytest

from nasforge import registry
from nasforge.core import Objective, Trial, TrialResult
from nasforge.errors import ConfigError, RunError
from nasforge.methods import Method, MethodContext, run_method
from nasforge.run.executors import Executor, ProcessExecutor
from nasforge.run.loop import Budget, Search
from nasforge.run.store import SCHEMA_VERSION, Store
from nasforge.testing import FunctionalEvaluator, ToySpace, toy_score


class SimulatedClockExecutor(Executor):
    """``workers`` simulated workers on a virtual clock: each job takes 1 or 10 time units
    (from a hash of its architecture), ``next_done`` returns the job that finishes first. So
    results come back out of order, deterministically, with no real waiting."""

    def __init__(self, workers: int = 2):
        self.workers = workers
        self.now = 0.0
        self._jobs: list[tuple[float, int, object]] = []
        self.evaluated: list[int] = []

    def submit(self, job) -> None:
        # a job starts when a worker is free: at most `workers` run at once
        busy = sorted(t for t, _, _ in self._jobs)
        start = self.now if len(busy) < self.workers else busy[len(busy) - self.workers]
        duration = 10.0 if zlib.crc32(job.arch.encode()) % 2 else 1.0
        self._jobs.append((start + duration, job.index, job))

    def next_done(self):
        self._jobs.sort(key=lambda j: (j[0], j[1]))
        finish, _, job = self._jobs.pop(0)
        self.now = finish
        self.evaluated.append(job.index)
        return job, FunctionalEvaluator().evaluate(self.space.parse(job.arch), self.space, None,
                                                   seed=job.seed)

    def pending(self) -> int:
        return len(self._jobs)


def make_search(store, *, strategy="random", seed=0, mode="async", executor=None, **kw) -> Search:
    return Search(space=ToySpace(), strategy=registry.create("strategies", strategy, seed=seed),
                  evaluator=FunctionalEvaluator(), task=None, objective=Objective("val_acc"),
                  seed=seed, store=store, executor=executor or SimulatedClockExecutor(), mode=mode,
                  **kw)


def summary(trials):
    return sorted((t.id, str(t.arch), t.status, t.metrics.get("val_acc"), t.seed) for t in trials)


# -- the store ----------------------------------------------------------------------------------
def test_checkpoints_are_kept_per_method(tmp_path):
    store = Store(tmp_path / "run.db")
    for step in range(5):
        store.save_checkpoint(step, {"s": step}, keep=2)
        store.save_checkpoint(10 + step, {"e": step}, keep=2, method="oneshot")
    assert store.latest_checkpoint() == (4, {"s": 4})
    assert store.latest_checkpoint("oneshot") == (14, {"e": 4})
    assert store.latest_checkpoint("other") is None
    assert store.checkpoint_methods() == ["multitrial", "oneshot"]
    assert store.conn.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0] == 4


def test_schema_1_store_is_migrated(tmp_path):
    # a version-1 store as nasforge wrote it before methods: checkpoints keyed by step alone
    import io

    import torch

    db = tmp_path / "run.db"
    con = sqlite3.connect(db)
    con.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE trials (id INTEGER PRIMARY KEY, arch TEXT NOT NULL, status TEXT NOT NULL,
            seed INTEGER NOT NULL, metrics TEXT NOT NULL, curves TEXT NOT NULL, cost TEXT NOT NULL,
            info TEXT NOT NULL, artifacts TEXT NOT NULL, reason TEXT, started REAL, finished REAL);
        CREATE TABLE checkpoints (step INTEGER PRIMARY KEY, created REAL NOT NULL, state BLOB NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '1');
        INSERT INTO trials VALUES (0, '1-2-3', 'ok', 7, '{"val_acc": 0.5}', '{}', '{}', '{}', '{}',
                                   NULL, NULL, NULL);
    """)
    for step in (1, 2):
        buf = io.BytesIO()
        torch.save({"strategy": {"step": step}}, buf)
        con.execute("INSERT INTO checkpoints VALUES (?, 0.0, ?)", (step, buf.getvalue()))
    con.commit()
    con.close()
    store = Store(db)
    assert store.get_meta("schema_version") == SCHEMA_VERSION == 2
    assert store.latest_checkpoint("multitrial") == (2, {"strategy": {"step": 2}})
    assert [t.metrics for t in store.trials(ToySpace())] == [{"val_acc": 0.5}]
    store.close()
    Store(db).close()  # opening a migrated store again changes nothing
    con = sqlite3.connect(db)
    cols = [r[1] for r in con.execute("PRAGMA table_info(checkpoints)")]
    assert cols == ["method", "step", "created", "state"]


def test_store_from_a_newer_nasforge_is_refused(tmp_path):
    store = Store(tmp_path / "run.db")
    store.set_meta("schema_version", SCHEMA_VERSION + 1)
    store.close()
    with pytest.raises(RunError, match="newer nasforge"):
        Store(tmp_path / "run.db")


# -- asynchronous mode --------------------------------------------------------------------------
def test_async_with_one_worker_equals_batch_of_one():
    a = make_search(Store(), seed=3, mode="async", executor=SimulatedClockExecutor(1)).run(Budget(trials=15))
    b = make_search(Store(), seed=3, mode="batch", batch=1).run(Budget(trials=15))
    assert [(t.id, str(t.arch)) for t in a] == [(t.id, str(t.arch)) for t in b]


def test_async_tells_as_trials_finish_and_keeps_workers_busy():
    executor = SimulatedClockExecutor(2)
    trials = make_search(Store(), seed=5, executor=executor).run(Budget(trials=12))
    assert sorted(t.id for t in trials) == list(range(12))
    told = [t.id for t in trials]
    assert told != sorted(told)  # slow trials were overtaken: told in finishing order
    batch_exec = SimulatedClockExecutor(2)
    make_search(Store(), seed=5, mode="batch", batch=2, executor=batch_exec).run(Budget(trials=12))
    assert executor.now < batch_exec.now  # no worker waited for a slow sibling


@pytest.mark.parametrize("strategy", ["random", "evolution"])
@pytest.mark.parametrize("crash_at", [3, 7])
def test_async_resume_loses_nothing_and_runs_nothing_twice(tmp_path, strategy, crash_at):
    class Crash(Exception):
        pass

    finished: list[int] = []

    def crash(search, trial):  # after the trial is stored, before it is told and checkpointed
        finished.append(trial.id)
        if len(finished) == crash_at:
            raise Crash()

    store = Store(tmp_path / "run.db")
    first = SimulatedClockExecutor(2)
    with pytest.raises(Crash):
        make_search(store, strategy=strategy, seed=8, executor=first, on_trial=[crash]).run(Budget(trials=14))
    store.close()
    before = {t.id: str(t.arch) for t in Store(tmp_path / "run.db").trials(ToySpace())}
    assert len(before) == crash_at

    store = Store(tmp_path / "run.db")
    second = SimulatedClockExecutor(2)
    trials = make_search(store, strategy=strategy, seed=8, executor=second).run(Budget(trials=14))
    assert sorted(t.id for t in trials) == list(range(14))  # every trial told exactly once
    assert not set(second.evaluated) & set(before)  # nothing finished is evaluated again
    assert sorted(first.evaluated + second.evaluated) == list(range(14))
    stored = {t.id: str(t.arch) for t in store.trials(ToySpace())}
    assert all(stored[i] == a for i, a in before.items())
    for t in trials:  # each result is the one its architecture and seed give
        assert t.metrics["val_acc"] == toy_score(t.arch)
    if strategy == "random":  # proposals do not depend on tells: same trials as uninterrupted
        full = make_search(Store(), strategy=strategy, seed=8).run(Budget(trials=14))
        assert summary(trials) == summary(full)


def test_async_on_process_pool_matches_local_results():
    pooled = make_search(Store(), seed=2, executor=ProcessExecutor(workers=2)).run(Budget(trials=6))
    local = make_search(Store(), seed=2, mode="batch").run(Budget(trials=6))
    assert summary(pooled) == summary(local)  # random: same proposals; results depend on seed only


# -- methods ------------------------------------------------------------------------------------
class Counting(Method):
    """A minimal method: records ``n`` architectures it samples, checkpointing after each."""

    name = "counting"

    def __init__(self, n: int = 4):
        self.n = n

    def run(self, ctx):
        loaded = ctx.load_state()
        done = 0 if loaded is None else loaded[0]
        rng = ctx.rng(99)
        if loaded is not None:
            from nasforge.core import set_rng_state
            set_rng_state(rng, loaded[1]["rng"])
        out = []
        for i in range(done, self.n):
            arch = ctx.space.sample(rng)
            out.append(ctx.record(100 + i, arch, TrialResult(metrics={"val_acc": toy_score(arch)}),
                                  info={"method": self.name}))
            from nasforge.core import rng_state
            ctx.save_state(i + 1, {"rng": rng_state(rng)})
        return out


def make_ctx(store, **kw):
    return MethodContext(task=None, space=ToySpace(), evaluator=FunctionalEvaluator(),
                         objective=Objective("val_acc"), seed=1, store=store,
                         budget=Budget(trials=5), **kw)


def test_method_checkpoints_resume_and_refuse_changed_options(tmp_path):
    full = run_method(Counting(n=6), make_ctx(Store()))
    store = Store(tmp_path / "run.db")

    def crash(driver, trial):  # the second trial is stored, the process dies before its checkpoint
        if trial.id == 101:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_method(Counting(n=6), make_ctx(store, on_trial=[crash]))
    assert store.latest_checkpoint("counting")[0] == 1 and store.count() == 2
    recorded = []
    rest = run_method(Counting(n=6), make_ctx(store, on_trial=[lambda d, t: recorded.append(t.id)]))
    assert [(t.id, str(t.arch)) for t in store.trials(ToySpace())] == [(t.id, str(t.arch)) for t in full]
    assert len(rest) == 5 and recorded == [102, 103, 104, 105]  # 101 was reused, not redone
    with pytest.raises(RunError, match="other options.*n: checkpoint has 6, now 7"):
        run_method(Counting(n=7), make_ctx(store))


def test_methods_registry_and_option_validation():
    assert {"multitrial", "sequential_halving"} <= set(registry.available("methods"))
    assert registry.create("methods", "multitrial").mode == "async"
    with pytest.raises(ConfigError, match="unknown option 'bogus'"):
        registry.create("methods", "multitrial", bogus=1)
    with pytest.raises(ConfigError, match="mode"):
        registry.create("methods", "multitrial", mode="sometimes")


def test_context_multitrial_search_records_through_callbacks(tmp_path):
    seen = []
    ctx = make_ctx(Store(tmp_path / "run.db"), strategy=registry.create("strategies", "random", seed=1),
                   on_trial=[lambda driver, t: seen.append((t.id, driver.best is not None))])
    trials = run_method(registry.create("methods", "multitrial"), ctx)
    assert [t.id for t in trials] == list(range(5)) == [i for i, _ in seen]
    assert [t.id for t in ctx.trials] == list(range(5)) and ctx.best is not None


# -- sequential halving -------------------------------------------------------------------------
@registry.register("evaluators", "toy_epochs")
class ToyEpochsEvaluator(FunctionalEvaluator):
    """``toy_score`` plus noise that shrinks with ``epochs`` (more budget, truer ranking)."""

    def __init__(self, epochs: int = 2):
        super().__init__()
        self.epochs = epochs

    def evaluate(self, arch, space, task, *, seed, workdir=None):
        result = super().evaluate(arch, space, task, seed=seed, workdir=workdir)
        noise = ((zlib.crc32(f"{arch}/{seed}".encode()) % 1000) / 1000 - 0.5) / self.epochs
        result.metrics["val_acc"] = toy_score(arch) + noise
        result.cost["epochs"] = float(self.epochs)
        return result


def halving_ctx(store, on_trial=()):
    return MethodContext(task=None, space=ToySpace(), evaluator=ToyEpochsEvaluator(),
                         objective=Objective("val_acc"), seed=4, store=store,
                         budget=Budget(trials=10), evaluator_name="toy_epochs",
                         strategy=registry.create("strategies", "random", seed=4),
                         on_trial=list(on_trial))


def test_sequential_halving_rungs_and_info():
    store = Store()
    method = registry.create("methods", "sequential_halving", top_k=4, eta=2)
    trials = run_method(method, halving_ctx(store))
    search = [t for t in trials if "rung" not in t.info]
    rungs = [t for t in trials if "rung" in t.info]
    assert [t.id for t in search] == list(range(10))
    # 4 candidates at 4 epochs, the best 2 at 8, the best of those at 16
    assert [(t.info["rung"], t.info["epochs"]) for t in rungs] == \
        [(1, 4)] * 4 + [(2, 8)] * 2 + [(3, 16)]
    assert [t.id for t in rungs] == list(range(10, 17))
    best4 = sorted(search, key=lambda t: (-t.metrics["val_acc"], t.result.cost["params"], t.id))[:4]
    assert [t.info["source_trial"] for t in rungs[:4]] == [t.id for t in best4]
    assert all(str(t.arch) == str(trials[t.info["source_trial"]].arch) for t in rungs)
    rung1 = sorted(rungs[:4], key=lambda t: (-t.metrics["val_acc"], t.result.cost["params"], t.id))
    assert [t.info["previous_trial"] for t in rungs[4:6]] == [t.id for t in rung1[:2]]
    assert all(t.result.cost["epochs"] == t.info["epochs"] for t in rungs)
    assert store.get_meta("sequential_halving")["selected_trial"] == 16


def test_sequential_halving_resumes_exactly_after_crash(tmp_path):
    full = run_method(registry.create("methods", "sequential_halving", top_k=4),
                      halving_ctx(Store()))
    for crash_id in (3, 10, 12, 16):  # in the search, at a rung's start, mid-rung, last rung
        store = Store(tmp_path / f"run{crash_id}.db")

        def crash(driver, trial):
            if trial.id == crash_id:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            run_method(registry.create("methods", "sequential_halving", top_k=4),
                       halving_ctx(store, [crash]))
        before = store.count()
        again: list[int] = []
        resumed = run_method(registry.create("methods", "sequential_halving", top_k=4),
                             halving_ctx(store, [lambda d, t: again.append(t.id)]))
        assert summary(resumed) == summary(full)
        assert [(t.id, t.info) for t in resumed] == [(t.id, t.info) for t in full]
        assert len(again) == len(full) - before and all(i > crash_id for i in again)


def test_sequential_halving_options_are_checked():
    with pytest.raises(ConfigError, match="eta = 1"):
        registry.create("methods", "sequential_halving", eta=1)
    with pytest.raises(ConfigError, match="unknown option 'k'"):
        registry.create("methods", "sequential_halving", k=3)
    ctx = halving_ctx(Store())
    ctx.evaluator_name = "toy_epochs"
    with pytest.raises(ConfigError, match="no option 'steps'.*epochs"):
        run_method(registry.create("methods", "sequential_halving", resource="steps"), ctx)
    assert ctx.store.count() == 0  # refused before any work


# -- training a network inside a method: per-epoch checkpoints in the store ---------------------
def test_context_train_checkpoints_every_epoch_and_resumes_exactly(tmp_path):
    import torch
    from torch import nn

    from nasforge.training import Callback, Engine, TrainConfig, seeded_module

    gen = torch.Generator().manual_seed(0)  # generated data: 2 classes, linearly separable-ish
    x = torch.randn(96, 8, generator=gen)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    data, val = (x[:64], y[:64]), (x[64:], y[64:])

    class Crash(Callback):
        def __init__(self, at=None):
            self.at = at

        def on_epoch_end(self, engine, logs):
            if engine.epoch == self.at:
                raise KeyboardInterrupt

    def train(store, crash_at=None):
        model = seeded_module(lambda: nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2),
                                                    nn.Linear(16, 2)), 1)
        ctx = make_ctx(store)
        ctx.method_name = "tiny_oneshot"
        engine = Engine(model, TrainConfig(epochs=5, batch_size=16, lr=1e-2), seed=3,
                        callbacks=[Crash(crash_at)])
        result = ctx.train(engine, data, val, extra=lambda: {"note": engine.epoch})
        return model, result

    full_model, full = train(Store())
    store = Store(tmp_path / "run.db")
    with pytest.raises(KeyboardInterrupt):
        train(store, crash_at=3)  # the crash comes before epoch 3's checkpoint
    step, state = store.latest_checkpoint("tiny_oneshot")
    assert step == 2 and state["state"]["note"] == 2 and "engine" in state["state"]
    model, resumed = train(store)
    assert resumed.curves["val_acc"] == full.curves["val_acc"]
    for a, b in zip(model.state_dict().values(), full_model.state_dict().values()):
        assert torch.equal(a, b)
    assert store.latest_checkpoint("tiny_oneshot")[0] == 5
