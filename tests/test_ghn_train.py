"""GHN training: exact resume from a checkpoint, the method through the CLI with kill -9,
the saved file loaded again."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nasforge import registry
from nasforge.data import load_task
from nasforge.ghn import load
from nasforge.ghn.train import GHNTrainOptions, make_engine, make_ghn, train_ghn

TINY_SPACE = dict(features=[8], kernels=[3], min_conv=1, max_conv=2)


def small_task():
    task = load_task("digits")
    return dataclasses.replace(task, train=(task.train[0][:128], task.train[1][:128]),
                               val=(task.val[0][:64], task.val[1][:64]))


def options(**kw) -> GHNTrainOptions:
    base = dict(epochs=2, meta_batch=2, batch_size=64, train_archs=4, val_archs=1,
                arch_source="space")
    base.update(kw)
    return GHNTrainOptions(**base)


def fit(task, opts, seed, **kw):
    space = registry.create("spaces", "chain", **TINY_SPACE)
    ghn = make_ghn(task, opts, seed)
    engine = make_engine(ghn, task, opts, seed, space=space)
    result = engine.fit(task.train, None, **kw)
    return ghn, result


def test_training_resumes_exactly_from_an_epoch_checkpoint(tmp_path):
    task = small_task()
    full, res = fit(task, options(epochs=2), seed=4)
    assert len(res.curves["ghn_val_acc"]) == 2 and res.steps == 4
    # the same run writing checkpoints; keep a copy of epoch 1's, as a kill would leave it
    ckpt, first = tmp_path / "ghn.ckpt", tmp_path / "first.ckpt"
    ghn_a = make_ghn(task, options(epochs=2), 4)
    space = registry.create("spaces", "chain", **TINY_SPACE)
    engine = make_engine(ghn_a, task, options(epochs=2), 4, space=space)
    save = engine.save_checkpoint

    def save_and_copy(path):
        out = save(path)
        if engine.epoch == 1:
            shutil.copy(path, first)
        return out

    engine.save_checkpoint = save_and_copy
    engine.fit(task.train, None, checkpoint=ckpt)
    assert torch.load(first, weights_only=True)["epoch"] == 1
    resumed, res2 = fit(task, options(epochs=2), seed=4, checkpoint=first, resume=True)
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    assert res2.curves["ghn_val_acc"] == res.curves["ghn_val_acc"]
    assert res2.curves["train_loss"] == res.curves["train_loss"]


def test_options_are_checked():
    from nasforge.errors import ConfigError

    with pytest.raises(ConfigError, match="epochs = 0"):
        GHNTrainOptions(epochs=0)
    with pytest.raises(ConfigError, match="arch source 'nowhere'"):
        train_ghn(small_task(), options(arch_source="nowhere"))


ENV = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
ARGS = ["search", "--method", "ghn", "-o", "method.epochs=3", "-o", "method.train_archs=4",
        "-o", "method.val_archs=1", "-o", "method.meta_batch=2", "-o", "method.batch_size=256",
        "-o", "method.rank=3", "-o", "method.arch_source=space", "-o", "space.features=[8]",
        "-o", "space.kernels=[3]", "-o", "space.min_conv=1", "-o", "space.max_conv=2",
        "--seed", "3", "--no-export", "--quiet"]


def query(db: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.mark.slow
def test_ghn_method_kill_9_resumes_exactly(tmp_path):
    from nasforge.testing import main_in_process

    # the search to kill is a real process; the uninterrupted run and the resume run the same
    # CLI main in this process (saves a Python and torch start-up each)
    assert main_in_process(*ARGS, "--out", str(tmp_path / "full")) == 0
    trials = "SELECT id, arch, status, metrics, info FROM trials ORDER BY id"
    full = query(tmp_path / "full" / "run.db", trials)
    assert len(full) == 3
    # kill -9 once the first epoch's checkpoint is in the store
    proc = subprocess.Popen([sys.executable, "-m", "nasforge", *ARGS, "--out", "killed"],
                            cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    db = tmp_path / "killed" / "run.db"
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            if db.exists() and query(db, "SELECT step FROM checkpoints WHERE method = 'ghn'"):
                break
        except sqlite3.OperationalError:
            pass
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    steps = [s for (s,) in query(db, "SELECT step FROM checkpoints WHERE method = 'ghn'")]
    assert steps and max(steps) < 4  # killed during training
    assert main_in_process("search", "--resume", str(tmp_path / "killed"), "--quiet") == 0
    assert query(db, trials) == full
    a, b = load(tmp_path / "full/method/ghn.pt"), load(tmp_path / "killed/method/ghn.pt")
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), k
