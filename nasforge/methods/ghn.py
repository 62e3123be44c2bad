"""Method ``ghn``: train a graph hypernetwork on the run's task, then score candidates of the
run's space by the accuracy of their predicted parameters (no training).

1. **Training** (``nasforge.ghn.train``): GHN-2's meta-batch training through the one engine,
   checkpointed in the run's store after every epoch (step = epoch) and resumed from the newest
   checkpoint: after ``kill -9`` the finished GHN equals an uninterrupted run's. The GHN is
   saved to ``RUN_DIR/method/ghn.pt`` (``nasforge.ghn.load`` reads it).
2. **Ranking**: ``rank`` distinct architectures sampled from the run's space (generator seeded
   from the run seed) get predicted parameters; each is recorded as a trial with ``val_acc`` =
   the task's validation accuracy with those parameters (batch-norm statistics estimated on
   training batches) and info ``{"method": "ghn", "variant": ..., "rank_index": i}``. Trial ids
   start at the first free id, fixed in a checkpoint before the first is recorded; predictions
   are deterministic, so a resumed run records the same values.

The run's budget is not used: ``epochs`` and ``rank`` say how much work is done.
"""

from __future__ import annotations

import time
from typing import Literal

from ..core import TrialResult, derive_seed
from ..errors import ConfigError, RunError
from ..registry import register
from ..training import seeded_module
from .base import Method, MethodContext


@register("methods", "ghn")
class GHNMethod(Method):
    """Train a GHN (GHN-2 by default) on the task; rank the space's samples by predicted accuracy."""

    name = "ghn"

    def __init__(self, variant: Literal["ghn2", "ghn1", "mlp"] = "ghn2", epochs: int = 40,
                 meta_batch: int = 0, hid: int = 32, lr: float = 1e-3,
                 weight_decay: float = 1e-5, grad_clip: float = 5.0, batch_size: int = 64,
                 train_archs: int = 256, val_archs: int = 8,
                 arch_source: str = "generator", rank: int = 20):
        from ..ghn.train import GHNTrainOptions

        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
            raise ConfigError(f"ghn: rank = {rank!r}; expected an integer >= 0")
        self.variant, self.epochs, self.meta_batch, self.hid = variant, epochs, meta_batch, hid
        self.lr, self.weight_decay, self.grad_clip = lr, weight_decay, grad_clip
        self.batch_size, self.train_archs, self.val_archs = batch_size, train_archs, val_archs
        self.arch_source, self.rank = arch_source, rank
        self.train_options = GHNTrainOptions(
            variant=variant, epochs=epochs, meta_batch=meta_batch, hid=hid, lr=lr,
            weight_decay=weight_decay, grad_clip=grad_clip, batch_size=batch_size,
            train_archs=train_archs, val_archs=val_archs, arch_source=arch_source)

    def run(self, ctx: MethodContext):
        from ..ghn.train import make_engine, make_ghn, predicted_accuracy, training_meta

        task = ctx.task
        if task is None:
            raise RunError("method ghn needs a task with training data")
        opts = self.train_options
        ghn = make_ghn(task, opts, ctx.seed)
        engine = make_engine(ghn, task, opts, ctx.seed, space=ctx.space)
        started = time.perf_counter()
        result = ctx.train(engine, task.train, None, key="engine")
        ghn.eval()
        ghn.config.meta.update(training_meta(opts, ctx.seed, result,
                                             time.perf_counter() - started))
        if ctx.work_dir is not None:
            ghn.save(ctx.work_dir / "ghn.pt")
        loaded = ctx.load_state()
        state = loaded[1] if loaded is not None else {}
        if "first_id" not in state:
            state = {"engine": engine.state_dict(), "first_id": ctx.next_id()}
            ctx.save_state(self.epochs + 1, state)
        first_id = int(state["first_id"])

        rng = ctx.rng(7, 1)
        archs, seen = [], set()
        tries = 0
        while len(archs) < self.rank and tries < 50 * max(1, self.rank):
            tries += 1
            arch = ctx.space.sample(rng)
            if str(arch) not in seen:
                seen.add(str(arch))
                archs.append(arch)
        trials = []
        for i, arch in enumerate(archs):
            tid = first_id + i
            stored = ctx.stored().get(tid)
            if stored is not None and str(stored.arch) == str(arch):
                trials.append(stored)
                continue
            t0 = time.perf_counter()
            model = seeded_module(lambda a=arch: ctx.space.build(a, task), derive_seed(ctx.seed, tid))
            acc = predicted_accuracy(ghn, model, task.val, bn_data=task.train[0])
            seconds = time.perf_counter() - t0
            res = TrialResult(metrics={"val_acc": acc},
                              cost={"params": float(sum(p.numel() for p in model.parameters())),
                                    "predict_seconds": seconds})
            trials.append(ctx.record(tid, arch, res, info={"method": "ghn", "variant": self.variant,
                                                           "rank_index": i}))
        return trials
