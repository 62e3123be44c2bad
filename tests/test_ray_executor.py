"""The ``ray`` executor on a local Ray cluster this module starts once (a start costs seconds):
the same trials as the local executor (toy space in both loop modes, and a real training search
on digits through the CLI), an evaluator that raises and a worker that dies as failed trials,
clean-up (a cluster the executor started is shut down, one it found is left running), and the
message when Ray is not installed."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from nasforge import registry
from nasforge.core import Objective
from nasforge.errors import MissingDependencyError
from nasforge.run.executors import LocalExecutor
from nasforge.run.loop import Budget, Search
from nasforge.run.store import Store
from nasforge.testing import FunctionalEvaluator, ToySpace, main_in_process

ray = pytest.importorskip("ray")
from nasforge.run.ray_executor import RayExecutor  # noqa: E402

# one cluster per test process: keep these tests on one xdist worker (with --dist loadgroup)
pytestmark = pytest.mark.xdist_group("ray")


@pytest.fixture(scope="module")
def cluster():
    """A local cluster started by a RayExecutor (which owns it); the tests' executors find it."""
    env_before = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_USAGE_STATS_ENABLED")}
    owner = RayExecutor(workers=2, threads=1)
    owner.start(ToySpace(), FunctionalEvaluator(), None)
    assert owner.owns_cluster and ray.is_initialized()
    temp_dir = owner._temp_dir
    # the evaluators defined here reach the workers by value (workers cannot import tests/)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield owner
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    owner.close()
    assert not ray.is_initialized() and not os.path.exists(temp_dir)  # shut down, files removed
    assert {k: os.environ.get(k) for k in env_before} == env_before  # its settings are undone


def search(executor, *, evaluator=None, mode="batch", trials=8, seed=9):
    s = Search(space=ToySpace(), strategy=registry.create("strategies", "random", seed=seed),
               evaluator=evaluator or FunctionalEvaluator(), task=None,
               objective=Objective("val_acc"), seed=seed, store=Store(), batch=2,
               executor=executor, mode=mode)
    return [(t.id, str(t.arch), t.status, t.metrics, t.seed, t.result.reason)
            for t in s.run(Budget(trials=trials))]


def test_same_trials_as_local_in_both_loop_modes(cluster):
    local = search(LocalExecutor(workers=2))
    assert search(RayExecutor(workers=2)) == local
    # async: random search proposes the same architectures whatever the order of tells
    assert sorted(search(RayExecutor(workers=2), mode="async")) == sorted(local)
    assert ray.is_initialized() and cluster.owns_cluster  # a found cluster is left running


class Breaking(FunctionalEvaluator):
    """Raises for architectures starting with 3; the worker process running it dies on 4-4-3
    (``os._exit``) and on 2-4-0 (``kill -9`` of itself)."""

    def evaluate(self, arch, space, task, *, seed, workdir=None):
        text = str(arch)
        if text.startswith("3"):
            raise RuntimeError(f"evaluator bug on {text}")
        if text == "4-4-3":
            os._exit(3)
        if text == "2-4-0":
            os.kill(os.getpid(), signal.SIGKILL)
        return super().evaluate(arch, space, task, seed=seed, workdir=workdir)


def test_exceptions_and_dead_workers_are_failed_trials(cluster):
    # seed 9 proposes 2-4-4 1-0-3 3-3-3 3-4-4 4-4-3 4-0-0 3-2-3 2-4-0 3-0-0 4-1-4
    trials = search(RayExecutor(workers=2), evaluator=Breaking(), mode="async", trials=10, seed=9)
    assert sorted(t[0] for t in trials) == list(range(10))  # every trial told, none hangs
    by_arch = {arch: (status, reason) for _, arch, status, _, _, reason in trials}
    for a in ("3-3-3", "3-4-4", "3-2-3", "3-0-0"):
        assert by_arch.pop(a) == ("failed", f"RuntimeError: evaluator bug on {a}")
    for a in ("4-4-3", "2-4-0"):
        status, reason = by_arch.pop(a)
        assert status == "failed" and reason.startswith("worker process died: "), reason
    assert by_arch == dict.fromkeys(["2-4-4", "1-0-3", "4-0-0", "4-1-4"], ("ok", None))


@pytest.mark.slow
def test_cli_search_on_digits_with_ray_equals_local(cluster, tmp_path, capsys):
    # real training (the main job's chain space on digits, 1 epoch): 2 Ray workers vs in process
    args = ["search", "--task", "digits", "--budget", "3", "--workers", "2", "--seed", "3",
            "-o", "evaluator.epochs=1", "--quiet", "--no-export"]
    assert main_in_process(*args, "--executor", "ray", "--out", str(tmp_path / "ray")) == 0
    assert main_in_process(*args, "--executor", "local", "--out", str(tmp_path / "local")) == 0
    capsys.readouterr()
    from test_cli import trial_rows

    on_ray, local = trial_rows(tmp_path / "ray"), trial_rows(tmp_path / "local")
    assert len(local) == 3 and all(status == "ok" for _, _, status, _, _ in local)
    assert on_ray == local  # every metric exactly
    assert "executor: ray" in (tmp_path / "ray" / "config.yaml").read_text()


def test_missing_ray_and_bad_executor_input_are_clear(tmp_path, capsys, monkeypatch):
    args = ["search", "--budget", "2", "--quiet", "--no-export"]
    assert main_in_process(*args, "--executor", "dask", "--out", str(tmp_path / "a")) == 2
    assert "unknown executor 'dask'; available: local, process, ray" in capsys.readouterr().err
    assert main_in_process(*args, "--executor", "ray", "-o", "executor.adress=auto",
                           "--out", str(tmp_path / "b")) == 2
    assert "unknown option 'adress'" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'nasforge\[ray\]'"):
        RayExecutor(workers=2)
    assert main_in_process(*args, "--executor", "ray", "--out", str(tmp_path / "c")) == 2
    assert "pip install 'nasforge[ray]'" in capsys.readouterr().err.replace("\n", "")
    assert not any((tmp_path / d).exists() for d in "abc")  # refused before a run directory



def test_unreachable_cluster_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch):
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "keep.txt").write_text("mine")
    done = runs / "done"  # a finished run (local executor) to resume onto the cluster
    assert main_in_process("search", "--budget", "1", "--quiet", "--no-export", "-o",
                           "evaluator.epochs=1", "--out", str(done)) == 0
    before = {p.name: p.read_bytes() for p in done.iterdir() if p.is_file() and p.name != "run.lock"}
    assert "config.yaml" in before and "run.db" in before
    capsys.readouterr()

    # what ray.init says for address=auto with no cluster running (the real call finds any
    # cluster on the machine, and a HOST:PORT with nothing there takes minutes to give up)
    def no_cluster(*args, **kwargs):
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", no_cluster)
    expected = ("error: cannot connect to the Ray cluster at address 'auto': ConnectionError: "
                "Could not find any running Ray instance.")
    on_cluster = ["--executor", "ray", "-o", "executor.address=auto", "--quiet", "--no-export"]
    # a new run: neither its directory nor the missing parent is left; what was there stays
    assert main_in_process("search", "--budget", "2", *on_cluster,
                           "--out", str(runs / "new" / "run")) == 2
    out, err = capsys.readouterr()
    assert err.replace("\n", "").strip() == expected and "run directory:" not in out
    assert sorted(p.name for p in runs.iterdir()) == ["done", "keep.txt"]
    # resuming onto it changes nothing in the run (config, trials, report; run.lock names the
    # last process that held the lock, as after any refused resume)
    assert main_in_process("search", "--resume", str(done), "--budget", "2", *on_cluster) == 2
    assert capsys.readouterr().err.replace("\n", "").strip() == expected
    assert {p.name: p.read_bytes() for p in done.iterdir()
            if p.is_file() and p.name != "run.lock"} == before


@pytest.fixture
def silent_address():
    """HOST:PORT where a TCP connection is never answered: a listening socket whose accept
    queue is full (Linux drops further SYNs), as a cluster behind a firewall looks."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    held = []
    try:
        for _ in range(8):
            try:
                held.append(socket.create_connection(("127.0.0.1", port), timeout=0.5))
            except socket.timeout:
                break
        else:
            pytest.skip("this system answers every connection to a full accept queue")
        yield f"127.0.0.1:{port}"
    finally:
        for sock in held:
            sock.close()
        server.close()


def test_a_silent_address_is_refused_within_connect_timeout(silent_address, tmp_path, capsys,
                                                            monkeypatch):
    import socket
    import time

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda *a, **k: calls.append(k))  # never reached
    monkeypatch.chdir(tmp_path)
    args = ["search", "--budget", "2", "--quiet", "--no-export", "--executor", "ray",
            "--out", "runs/new"]
    for address in (silent_address, f"ray://{silent_address}"):
        start = time.monotonic()
        assert main_in_process(*args, "-o", f"executor.address={address}",
                               "-o", "executor.connect_timeout=1") == 2
        assert time.monotonic() - start < 10  # Ray alone waits minutes here
        assert capsys.readouterr().err.replace("\n", "").strip() == (
            f"error: cannot connect to the Ray cluster at address {address!r}: ConnectionError: "
            f"nothing answered at {silent_address} within 1 s (executor option connect_timeout)")
    # nothing listens: refused at once, whatever the timeout
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    free = closed.getsockname()[1]
    closed.close()
    assert main_in_process(*args, "-o", f"executor.address=127.0.0.1:{free}") == 2
    assert "Connection refused" in capsys.readouterr().err
    monkeypatch.setenv("RAY_ADDRESS", silent_address)  # auto: the address Ray would use
    assert main_in_process(*args, "-o", "executor.address=auto",
                           "-o", "executor.connect_timeout=0.5") == 2
    assert f"nothing answered at {silent_address} within 0.5 s" in capsys.readouterr().err
    for bad in ("0", "-1", "nan", "soon"):
        assert main_in_process(*args, "-o", f"executor.connect_timeout={bad}") == 2
        err = capsys.readouterr().err
        assert "connect_timeout" in err and "Traceback" not in err, err
    assert calls == [] and list(tmp_path.iterdir()) == []
    assert RayExecutor(workers=1).connect_timeout == 30.0
