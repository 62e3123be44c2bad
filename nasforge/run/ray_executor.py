"""The ``ray`` executor: evaluations as Ray tasks, on an existing cluster or a local one it starts.

Same contract and results as ``local`` and ``process`` (see ``nasforge.run.executors``): each
evaluation runs with ``threads`` torch threads, so a trial's result depends only on its
architecture, seed and evaluator, never on which executor or machine ran it (on machines with
the same torch build). Where the cluster comes from:

- ``address`` given (``"auto"``, ``"HOST:PORT"`` or ``"ray://HOST:PORT"``): connect to that
  cluster (refused after ``connect_timeout`` seconds if its host and port do not answer);
  ``close()`` disconnects and leaves the cluster running.
- this process already called ``ray.init``: use that connection and leave it alone.
- neither: start a local cluster with ``workers * threads`` CPUs in a temporary directory (no
  dashboard, Ray's token authentication and usage reporting off unless the environment sets
  ``RAY_AUTH_MODE`` / ``RAY_USAGE_STATS_ENABLED``); ``close()`` shuts it down and removes the
  directory.

The space, evaluator and task go to the cluster's object store once per ``start``; each task
sends the job (architecture text, seed) and a reference to them, and a worker process keeps the
last ones it loaded, so the task's data is not deserialised again for every trial. Each task
reserves ``threads`` CPUs, so on a cluster no more evaluations run at once than cores allow.

Errors: an exception inside the evaluator is a failed trial with its message (as everywhere); a
worker process that dies (``os._exit``, ``kill -9``, out of memory) is a failed trial
``worker process died: ...`` unless ``retries`` > 0, in which case Ray runs the task again
(up to ``retries`` times) before it fails. Ray is imported only when this executor is used.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import shutil
import socket
import tempfile
from typing import Any

from ..core import Evaluator, SearchSpace, Task, TrialResult
from ..errors import ConfigError, MissingDependencyError
from ..registry import register
from .executors import Executor, Job, evaluate_job, evaluation_threads

INSTALL_HINT = "pip install 'nasforge[ray]'"
# set for a local cluster this executor starts, unless the environment already says otherwise
LOCAL_CLUSTER_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def require_ray() -> Any:
    """The ``ray`` module, or ``MissingDependencyError`` naming the extra to install."""
    if importlib.util.find_spec("ray") is None:
        raise MissingDependencyError(
            f"executor 'ray' needs the package ray, which is not installed; install it with: "
            f"{INSTALL_HINT}")
    import ray

    return ray


def start_local_cluster(num_cpus: int, temp_dir: str) -> list[str]:
    """``ray.init`` a local, single-machine cluster of ``num_cpus`` CPUs keeping its files in
    ``temp_dir``; quiet (no dashboard, worker output not copied to this process). Returns the
    environment variables of ``LOCAL_CLUSTER_ENV`` it set (to remove after ``ray.shutdown``)."""
    ray = require_ray()
    added = [key for key in LOCAL_CLUSTER_ENV if key not in os.environ]
    for key in added:  # read by ray.init and inherited by the cluster's processes
        os.environ[key] = LOCAL_CLUSTER_ENV[key]
    try:
        ray.init(num_cpus=num_cpus, include_dashboard=False, _temp_dir=temp_dir,
                 logging_level=logging.WARNING, log_to_driver=False)
    except BaseException:
        for key in added:
            os.environ.pop(key, None)
        raise
    return added


def probe_address(address: str, timeout: float) -> None:
    """Open (and close) a TCP connection to the host and port of a Ray ``address``
    (``HOST:PORT``, ``ray://HOST:PORT``; ``auto`` is the ``RAY_ADDRESS`` environment variable
    where set) within ``timeout`` seconds, raising ``ConnectionError`` if nothing answers.

    ``ray.init`` keeps retrying an address where nothing answers for minutes; this bounds that
    wait and leaves no thread or process behind. An address this cannot read (``auto`` without
    ``RAY_ADDRESS``, which Ray resolves on this machine) is left to ``ray.init``."""
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS", "").strip()
        if address in ("", "auto", "local"):
            return
    hostport = address.removeprefix("ray://").split("/", 1)[0]
    host, sep, port_text = hostport.rpartition(":")
    host = host.strip("[]")  # [::1]:6379
    if not sep or not host or not port_text.isdigit():
        return
    try:
        socket.create_connection((host, int(port_text)), timeout=timeout).close()
    except socket.timeout:
        raise ConnectionError(f"nothing answered at {hostport} within {timeout:g} s "
                              "(executor option connect_timeout)") from None
    except OSError as exc:  # refused, unreachable, unknown host
        raise ConnectionError(f"{hostport}: {exc.strerror or exc}") from None


# -- in a Ray worker process ----------------------------------------------------------------------
_LOADED: dict[str, Any] = {}  # the (space, evaluator, task) this worker process loaded last, by ref


def _evaluate_in_worker(shared: list[Any], job: Job, threads: int) -> TrialResult:
    """One job in a Ray worker. ``shared`` is ``[ObjectRef]`` (in a list, so Ray passes the
    reference instead of resolving it) of ``(space, evaluator, task)``."""
    import ray
    import torch

    key = shared[0].hex()
    if _LOADED.get("key") != key:
        _LOADED.clear()  # a worker keeps one run's data, not every run's it ever served
        _LOADED.update(key=key, value=ray.get(shared[0]))
    torch.set_num_threads(threads)
    space, evaluator, task = _LOADED["value"]
    return evaluate_job(space, evaluator, task, job)


@register("executors", "ray")
class RayExecutor(Executor):
    """Evaluates jobs as Ray tasks, up to ``workers`` at a time (the loop keeps that many in
    flight); ``threads`` torch threads per evaluation (default: this process's torch threads //
    workers, as ``process``), ``retries`` reruns of a task whose worker died, ``runtime_env``
    Ray's runtime environment for the tasks (e.g. ``{"pip": [...]}`` or ``working_dir`` on a
    cluster where nasforge is not installed), ``connect_timeout`` the seconds to wait for the
    cluster at ``address`` to answer before the run is refused (``probe_address``)."""

    def __init__(self, workers: int = 2, threads: int | None = None, address: str | None = None,
                 retries: int = 0, runtime_env: dict[str, Any] | None = None,
                 connect_timeout: float = 30.0):
        if workers < 1:
            raise ConfigError(f"executor 'ray': workers must be >= 1, got {workers}")
        if retries < 0:
            raise ConfigError(f"executor 'ray': retries must be >= 0, got {retries}")
        if address is not None and not str(address).strip():
            raise ConfigError(f"executor 'ray': address {address!r} is empty; give 'auto', 'HOST:PORT' or "
                              "'ray://HOST:PORT', or leave it out to start a local cluster")
        if isinstance(connect_timeout, bool) or not isinstance(connect_timeout, (int, float)) \
                or not math.isfinite(connect_timeout) or connect_timeout <= 0:
            raise ConfigError(f"executor 'ray': connect_timeout = {connect_timeout!r}; expected "
                              "a positive number of seconds (e.g. 30)")
        require_ray()  # before any work: the message names the extra to install
        self.workers = workers
        self.threads = evaluation_threads(workers, threads)
        self.address, self.retries, self.runtime_env = address, retries, runtime_env
        self.connect_timeout = float(connect_timeout)
        self._connected = False  # this executor called ray.init (and so calls ray.shutdown)
        self._temp_dir: str | None = None  # the local cluster's files, when this executor started one
        self._env_added: list[str] = []  # environment variables set for that cluster
        self._shared: list[Any] | None = None  # [ObjectRef of (space, evaluator, task)]
        self._remote: Any = None
        self._refs: dict[Any, Job] = {}  # in flight, in submission order

    @property
    def owns_cluster(self) -> bool:
        """True while a local cluster this executor started is running."""
        return self._temp_dir is not None

    def start(self, space: SearchSpace, evaluator: Evaluator, task: Task | None) -> None:
        super().start(space, evaluator, task)
        self._shared = None  # the next submit sends these
        self._ensure_ray()

    def connect(self) -> None:
        """Connect to the cluster at ``address`` now, so that a run refuses an unreachable one
        before it writes anything (a local cluster is started on first use: it takes seconds)."""
        if self.address is not None:
            self._ensure_cluster()

    def _ensure_ray(self) -> Any:
        """Connect (or start a local cluster) if needed; put the shared objects once."""
        ray = self._ensure_cluster()
        if self._remote is None:
            self._remote = ray.remote(_evaluate_in_worker)
        if self._shared is None:
            self._shared = [ray.put((self.space, self.evaluator, self.task))]
        return ray

    def _ensure_cluster(self) -> Any:
        """``ray`` connected: to ``address``, to this process's ``ray.init``, or to a local
        cluster started here."""
        ray = require_ray()
        if not ray.is_initialized():
            if self.address is not None:
                try:
                    probe_address(str(self.address), self.connect_timeout)
                    quiet = ({} if str(self.address).startswith("ray://")  # Ray Client
                             else {"logging_level": logging.WARNING, "log_to_driver": False})
                    ray.init(address=self.address, **quiet)
                except Exception as exc:  # ConnectionError, ValueError, RuntimeError (auth), ...
                    raise ConfigError(f"cannot connect to the Ray cluster at address "
                                      f"{self.address!r}: {type(exc).__name__}: {exc}") from None
            else:
                self._temp_dir = tempfile.mkdtemp(prefix="nasforge-ray-")
                try:
                    self._env_added = start_local_cluster(self.workers * self.threads,
                                                          self._temp_dir)
                except BaseException:
                    shutil.rmtree(self._temp_dir, ignore_errors=True)
                    self._temp_dir = None
                    raise
            self._connected = True
            self._shared = None
        return ray

    def submit(self, job: Job) -> None:
        self._ensure_ray()
        options: dict[str, Any] = {"num_cpus": self.threads, "max_retries": self.retries}
        if self.runtime_env is not None:
            options["runtime_env"] = self.runtime_env
        ref = self._remote.options(**options).remote(self._shared, job, self.threads)
        self._refs[ref] = job

    def next_done(self) -> tuple[Job, TrialResult]:
        if not self._refs:
            raise RuntimeError("next_done() with no job submitted")
        import ray

        refs = list(self._refs)
        ray.wait(refs, num_returns=1)
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        ref = min(done, key=refs.index)  # the earliest submitted among those done
        job = self._refs.pop(ref)
        return job, self._result(ray, ref)

    @staticmethod
    def _result(ray: Any, ref: Any) -> TrialResult:
        try:
            return ray.get(ref)
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                ray.exceptions.LocalRayletDiedError) as exc:
            return TrialResult.failed(f"worker process died: {_first_line(exc)}")
        except ray.exceptions.RayTaskError as exc:  # outside the evaluator (e.g. unpickling)
            cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else exc
            return TrialResult.failed(f"{type(cause).__name__}: {_first_line(cause)}")
        except ray.exceptions.RayError as exc:  # object lost, task cancelled, ...
            return TrialResult.failed(f"{type(exc).__name__}: {_first_line(exc)}")

    def pending(self) -> int:
        return len(self._refs)

    def close(self) -> None:
        """Cancel jobs still in flight; disconnect, and shut down a local cluster this executor
        started (one it connected to, or a connection made by the caller, keeps running)."""
        refs, self._refs = list(self._refs), {}
        self._shared = None
        if importlib.util.find_spec("ray") is None:
            return
        import ray

        if ray.is_initialized():
            for ref in refs:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # already finished or its worker already gone
                    pass
            if self._connected:
                ray.shutdown()
        self._connected = False
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None
        for key in self._env_added:
            os.environ.pop(key, None)
        self._env_added = []


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
