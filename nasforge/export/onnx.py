"""Export a built network to ONNX, with a dynamic batch dimension, and check it in onnxruntime.

``export_onnx(model, example_input, path)`` writes one self-contained ``.onnx`` file (weights
inside) whose input ``input`` and output ``logits`` have a free first dimension ``batch``, then
loads it in onnxruntime and compares its outputs with PyTorch's on a batch of another size
(``max_abs_diff`` must stay <= ``atol``, default 1e-4). The file is written beside ``path`` and
renamed into place only after that check, so a failed export never leaves a broken file.

Exporters (``exporter=``): ``torchscript`` is PyTorch's older exporter (``dynamo=False``,
``dynamic_axes``); ``dynamo`` is the ``torch.export`` one (``dynamo=True``, ``dynamic_shapes``,
needs onnxscript). Both give the same outputs on every nasforge space with torch 2.13; the
TorchScript one takes well under a second where ``dynamo`` takes 5-10 s on 2 CPU cores, so
``auto`` (the default) uses it and falls back to ``dynamo`` if it fails or is gone from a later
PyTorch.

``export_best(run_dir, space, task)`` writes ``best/model.onnx`` of a run from ``best/arch.txt``
and ``best/model.pt``; the run calls it when the search ends. ``nasforge export`` (``cli_export``)
exports any trial of a finished run.

The ONNX packages are an optional extra: without them these functions raise
``MissingDependencyError`` naming ``pip install 'nasforge[onnx]'``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
from torch import nn

from ..core import Architecture, Network, SearchSpace, Task, check_arch_text
from ..errors import ConfigError, MissingDependencyError, NasforgeError

log = logging.getLogger(__name__)

Exporter = Literal["auto", "torchscript", "dynamo"]
EXPORTERS = ("auto", "torchscript", "dynamo")
INPUT_NAME, OUTPUT_NAME, BATCH_DIM = "input", "logits", "batch"
INSTALL_HINT = "pip install 'nasforge[onnx]'"


class ExportError(NasforgeError):
    """The export failed, or the exported model does not compute what the PyTorch one does."""


@dataclass
class OnnxExport:
    """What ``export_onnx`` wrote and measured."""

    path: Path
    exporter: str  # the one that produced the file
    seconds: float  # export time (without the check)
    check_seconds: float
    check_batch: int  # batch size of the onnxruntime check (differs from the example's)
    max_abs_diff: float
    opset: int

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "exporter": self.exporter, "seconds": self.seconds,
                "check_seconds": self.check_seconds, "check_batch": self.check_batch,
                "max_abs_diff": self.max_abs_diff, "opset": self.opset}


def missing_packages(exporter: str = "auto") -> list[str]:
    """The ONNX packages this export needs that are not installed (empty: all there)."""
    needed = ["onnx", "onnxruntime"] + (["onnxscript"] if exporter == "dynamo" else [])
    return [name for name in needed if importlib.util.find_spec(name) is None]


def require_onnx(exporter: str = "auto") -> None:
    """Raise ``MissingDependencyError`` naming the extra to install if a package is missing."""
    missing = missing_packages(exporter)
    if missing:
        raise MissingDependencyError(
            f"ONNX export needs the package(s) {', '.join(missing)}, which are not installed; "
            f"install them with: {INSTALL_HINT}")


def _check_exporter(exporter: str) -> None:
    if exporter not in EXPORTERS:
        raise ConfigError(f"ONNX exporter {exporter!r}; expected one of {', '.join(EXPORTERS)}")


def export_onnx(model: nn.Module, example_input: torch.Tensor, path: str | Path, *,
                exporter: Exporter = "auto", check_batch: int | None = None, atol: float = 1e-4,
                metadata: dict[str, Any] | None = None, seed: int = 0) -> OnnxExport:
    """Write ``model`` (in eval mode, on CPU) to ``path`` as ONNX with a dynamic batch dimension.

    ``example_input`` is one batch ``(N, *input_shape)``; ``check_batch`` (default ``N + 3``) is
    the batch size of the onnxruntime check, random normal inputs drawn from ``seed``.
    ``metadata`` (string values after ``str``) goes into the model's ``metadata_props``.
    Raises ``ExportError`` when exporting fails or the outputs differ by more than ``atol``.
    """
    _check_exporter(exporter)
    require_onnx(exporter)
    if not isinstance(example_input, torch.Tensor) or example_input.dim() < 2:
        raise ConfigError(f"example_input must be a tensor (batch, *input_shape), got "
                          f"{type(example_input).__name__} {getattr(example_input, 'shape', '')}")
    path = Path(path)
    if path.exists() and path.is_dir():
        raise ConfigError(f"ONNX output {path} is a directory; expected a file path ending .onnx")
    path.parent.mkdir(parents=True, exist_ok=True)
    example = example_input.detach().to("cpu", torch.float32)
    if example.shape[0] < 2:  # torch.export specialises a batch of 1; 2 keeps it symbolic
        example = example.expand(2, *example.shape[1:]).contiguous()
    check_batch = example.shape[0] + 3 if check_batch is None else int(check_batch)
    if check_batch < 1 or check_batch == example.shape[0]:
        raise ConfigError(f"check_batch = {check_batch}: expected a batch size >= 1 different "
                          f"from the example's {example.shape[0]} (it checks the dynamic batch)")

    was_training = model.training
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    model = model.to("cpu").eval()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        order = ["torchscript", "dynamo"] if exporter == "auto" else [exporter]
        errors: list[str] = []
        used = None
        t0 = time.perf_counter()
        for name in order:
            if name == "dynamo" and missing_packages("dynamo"):
                errors.append(f"dynamo: {missing_packages('dynamo')} not installed")
                continue
            try:
                t0 = time.perf_counter()
                _export(model, example, tmp, name)
                used = name
                break
            except Exception as exc:  # noqa: BLE001 - reported below with the exporter's name
                errors.append(f"{name}: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}")
        if used is None:
            raise ExportError(f"could not export {type(model).__name__} to ONNX ("
                              + "; ".join(errors) + ")")
        seconds = time.perf_counter() - t0
        opset = _finish_model(tmp, metadata)
        t1 = time.perf_counter()
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(check_batch, *example.shape[1:], generator=g)
        diff = _compare(model, tmp, x)
        check_seconds = time.perf_counter() - t1
        if not diff <= atol:
            raise ExportError(f"the ONNX model ({used} exporter) differs from PyTorch by "
                              f"{diff:.3g} on a batch of {check_batch} (allowed {atol:g}); "
                              f"nothing was written to {path}")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
        model.to(device).train(was_training)
    return OnnxExport(path=path, exporter=used, seconds=seconds, check_seconds=check_seconds,
                      check_batch=check_batch, max_abs_diff=float(diff), opset=opset)


def _export(model: nn.Module, example: torch.Tensor, out: Path, exporter: str) -> None:
    names = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME]}
    with warnings.catch_warnings():
        # the TorchScript exporter announces its deprecation; dynamo warns about torchvision ops
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            torch.onnx.export(model, (example,), str(out), dynamo=False,
                              dynamic_axes={INPUT_NAME: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}},
                              **names)
        else:
            # the keyword is the forward's first argument name
            arg = next(iter(_forward_args(model)), "x")
            quiet = logging.getLogger("torch.onnx")
            level = quiet.level
            quiet.setLevel(logging.ERROR)
            try:
                torch.onnx.export(model, (example,), str(out), dynamo=True, external_data=False,
                                  dynamic_shapes={arg: {0: torch.export.Dim(BATCH_DIM)}},
                                  verbose=False, **names)
            finally:
                quiet.setLevel(level)


def _forward_args(model: nn.Module) -> list[str]:
    import inspect

    return [p for p in inspect.signature(model.forward).parameters if p != "self"]


def _finish_model(path: Path, metadata: dict[str, Any] | None) -> int:
    """Check the file with onnx's checker, add metadata; returns the opset version."""
    import onnx

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    if metadata:
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key = str(key)
            entry.value = value if isinstance(value, str) else json.dumps(value, default=str)
        onnx.save(proto, str(path))
    return max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)


def ort_session(path: str | Path):
    """An onnxruntime CPU session for ``path``, using as many threads as torch does."""
    require_onnx()
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, torch.get_num_threads())
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def run_onnx(path: str | Path, x: torch.Tensor | np.ndarray) -> np.ndarray:
    """The ONNX model's output for one batch ``x`` (float32)."""
    session = ort_session(path)
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return session.run([OUTPUT_NAME], {INPUT_NAME: arr.astype(np.float32, copy=False)})[0]


def _compare(model: nn.Module, path: Path, x: torch.Tensor) -> float:
    out = run_onnx(path, x)
    with torch.no_grad():
        ref = model(x).detach().cpu().numpy()
    if out.shape != ref.shape:
        raise ExportError(f"the ONNX model's output has shape {out.shape}, PyTorch's {ref.shape} "
                          f"(batch {x.shape[0]}); the batch dimension did not stay dynamic")
    return float(np.max(np.abs(out - ref))) if out.size else 0.0


# --------------------------------------------------------------------------------------------
# networks of a run


def trial_network(arch: Architecture, space: SearchSpace, task: Task, *, evaluator: Any = None,
                  seed: int = 0) -> nn.Module:
    """The network ``evaluator`` trains for ``arch`` (its ``network`` method, so head options
    such as batch norm or dropout match a saved state dict), else ``space.build``."""
    builder = getattr(evaluator, "network", None)
    if callable(builder):
        return builder(arch, space, task, seed=seed)
    from ..evaluators.train import build_network

    return build_network(space, arch, task, seed=seed)


def load_weights(network: nn.Module, path: str | Path) -> None:
    """Load a ``model.pt`` state dict (``weights_only``) into ``network``; ``ExportError`` if it
    does not match (another architecture or other evaluator options)."""
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ExportError(f"{path} does not hold a state dict (found {type(state).__name__})")
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise ExportError(f"the weights in {path} do not fit the rebuilt network: "
                          f"{' '.join(line.strip() for line in first[:3])}") from None


def example_batch(task: Task, n: int = 2) -> torch.Tensor:
    """``n`` inputs of ``task`` (from its validation split, else zeros of the input shape)."""
    x = task.val[0] if task.val is not None and len(task.val[0]) >= n else None
    return x[:n].float() if x is not None else torch.zeros(n, *task.input_shape)


def model_metadata(arch: Architecture, space: SearchSpace, task: Task, **extra: Any) -> dict[str, Any]:
    """What the ONNX file records about where it came from (``metadata_props``)."""
    return {"nasforge.arch": str(arch), "nasforge.space": space.name,
            "nasforge.space_options": space.options(), "nasforge.task": task.name,
            "nasforge.input_shape": list(task.input_shape),
            "nasforge.num_classes": int(task.num_classes),
            "nasforge.class_names": task.class_names or [], **extra}


def export_best(run_dir: str | Path, space: SearchSpace, task: Task, *, evaluator: Any = None,
                exporter: Exporter = "auto") -> Path | None:
    """Write ``run_dir/best/model.onnx`` from ``best/arch.txt`` and ``best/model.pt``.

    Called when a run's search ends. Skips (one log line, returns None) when the ONNX extra is
    not installed or the best trial kept no weights, removing a ``model.onnx`` of an earlier best
    so it never describes another trial; any export failure is logged, not raised (the search's
    results are already stored).
    """
    best = Path(run_dir) / "best"
    onnx_path = best / "model.onnx"
    arch_file, weights = best / "arch.txt", best / "model.pt"
    if not arch_file.is_file() or not weights.is_file():
        if onnx_path.exists():
            onnx_path.unlink()
        if arch_file.is_file():  # info, not a warning: table and proxy evaluators train nothing
            log.info("best/model.onnx skipped: the best trial kept no trained weights "
                     "(best/model.pt); export it with `nasforge export RUN_DIR --untrained`")
        return None
    missing = missing_packages(exporter)
    if missing:
        log.warning("best/model.onnx skipped: %s not installed (%s)", ", ".join(missing), INSTALL_HINT)
        return None
    try:
        arch = check_arch_text(space, arch_file.read_text().strip())
        trial = _best_trial_info(best)
        net = trial_network(arch, space, task, evaluator=evaluator, seed=trial.get("seed", 0))
        load_weights(net, weights)
        result = export_onnx(net, example_batch(task), onnx_path, exporter=exporter,
                             metadata=model_metadata(arch, space, task, **{
                                 "nasforge.trial": trial.get("trial"), "nasforge.weights": "trained"}))
    except Exception as exc:  # noqa: BLE001 - the run's results are safe; say why and go on
        if onnx_path.exists():
            onnx_path.unlink()
        log.warning("best/model.onnx not written: %s", exc)
        return None
    log.info("wrote %s in %.2f s (max abs diff %.2g)", onnx_path, result.seconds, result.max_abs_diff)
    return result.path


@dataclass
class TrialExport:
    """What ``export_trial`` exported: the trial, where its weights came from, the file."""

    trial: int
    arch: str
    weights: str  # "best/model.pt", a kept trial's model.pt, or "untrained (seed S)"
    export: OnnxExport


def export_trial(run_dir: str | Path, *, trial: int | None = None, out: str | Path | None = None,
                 untrained: bool = False, exporter: Exporter = "auto") -> TrialExport:
    """Export one trial of a run to ONNX (``nasforge export``); the best trial by default.

    The network is rebuilt from the run's saved config (task, space, evaluator options). Its
    weights: ``best/model.pt`` for the best trial, the trial's own ``model.pt`` where it was kept
    (``keep_trials: true``), or, with ``untrained=True``, the initialisation the trial started
    from. Without kept weights and without ``untrained`` the export is refused. ``out`` defaults
    to ``RUN_DIR/export/trial-<id>.onnx`` (``-untrained`` added); an existing file is never
    overwritten.
    """
    from ..errors import RunError
    from ..experiments import make_evaluator, open_run

    _check_exporter(exporter)
    require_onnx(exporter)
    ctx = open_run(run_dir)
    best = ctx.dir / "best"
    best_info = _best_trial_info(best)
    best_id = best_info.get("trial")
    if trial is None:
        if best_id is None:
            raise RunError(f"run {ctx.dir} has no best trial yet (no best/metrics.json); "
                           "choose one with --trial INDEX")
        trial = int(best_id)
    row = ctx.row(trial)
    arch = check_arch_text(ctx.space, row["arch"])
    weights: Path | None = None
    if not untrained:
        kept = (row.get("artifacts") or {}).get("model")
        best_arch = (best / "arch.txt").read_text().strip() if (best / "arch.txt").is_file() else None
        if best_id == trial and best_arch == row["arch"] and (best / "model.pt").is_file():
            weights = best / "model.pt"
        elif kept and Path(kept).is_file():
            weights = Path(kept)
        elif kept and (ctx.dir / "trials" / str(trial) / "model.pt").is_file():  # run moved
            weights = ctx.dir / "trials" / str(trial) / "model.pt"
        else:
            status = "" if row["status"] == "ok" else f" (it {row['status']}: {row.get('reason')})"
            raise RunError(
                f"trial {trial} of {ctx.dir} has no trained weights to export{status}: a run keeps "
                f"only the best trial's (best/model.pt{'' if best_id is None else f', trial {best_id}'})"
                f", and every trial's only with keep_trials: true. Add --untrained to export its "
                f"network with the initial weights of trial seed {row['seed']}")
    if out is None:
        out = ctx.dir / "export" / f"trial-{trial}{'-untrained' if weights is None else ''}.onnx"
    out = Path(out)
    if out.exists():
        raise RunError(f"{out} already exists; choose another --out (nothing was overwritten)")
    name, _, arg = str(ctx.config.get("evaluator", "train")).partition(":")
    try:
        options = ctx.evaluator_options(name)
        if arg:
            options.setdefault("path", arg)
        evaluator = make_evaluator(name, options)
    except NasforgeError:  # e.g. a table file that moved: the space's own network is the same
        evaluator = None
    net = trial_network(arch, ctx.space, ctx.task, evaluator=evaluator, seed=int(row["seed"]))
    if weights is not None:
        load_weights(net, weights)
    what = str(weights.relative_to(ctx.dir) if weights.is_relative_to(ctx.dir) else weights) \
        if weights is not None else f"untrained (seed {row['seed']})"
    result = export_onnx(net, example_batch(ctx.task), out, exporter=exporter,
                         metadata=model_metadata(arch, ctx.space, ctx.task, **{
                             "nasforge.trial": trial, "nasforge.weights": what}))
    return TrialExport(trial=trial, arch=str(arch), weights=what, export=result)


def _best_trial_info(best: Path) -> dict[str, Any]:
    try:
        info = json.loads((best / "metrics.json").read_text())
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


__all__ = ["export_onnx", "export_best", "export_trial", "OnnxExport", "TrialExport", "ExportError", "MissingDependencyError",
           "missing_packages", "require_onnx", "run_onnx", "ort_session", "trial_network",
           "load_weights", "example_batch", "model_metadata", "INSTALL_HINT", "EXPORTERS"]
