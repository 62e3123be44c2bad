"""ONNX export: every space's network round-trips through onnxruntime with a dynamic batch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nasforge.core import Task
from nasforge.spaces.chain import ChainSpace
from nasforge.spaces.nb201 import NB201Space
from nasforge.testing import main_in_process

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from nasforge.errors import ConfigError  # noqa: E402
from nasforge.export import onnx as onnx_export  # noqa: E402
from nasforge.export.onnx import ExportError, export_best, export_onnx, run_onnx  # noqa: E402


def synthetic_task(shape: tuple[int, ...], kind: str) -> Task:
    """Random tensors of the right shape (generated data: the test compares two runtimes)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, *shape, generator=g)
    y = torch.randint(0, 10, (12,), generator=g)
    return Task(name=f"synthetic-{kind}", kind=kind, input_shape=shape, num_classes=10,  # type: ignore[arg-type]
                train=(x, y), val=(x, y), test=(x, y))


CASES = {
    "chain-2d": (lambda: ChainSpace(input_shape=(1, 8, 8)), (1, 8, 8), "image",
                 "[C(16,3,1,1,0), P(2,2,0,0), C(32,3,1,1,1), C(16,1,1,0,1), SM(10)]"),
    "chain-1d": (lambda: ChainSpace(input_shape=(1, 40), max_fc=1), (1, 40), "series",
                 "[C(16,5,1,2,1), P(2,2,0,0), C(16,3,1,1,0), C(32,7,2,3,1), FC(32), SM(10)]"),
    "nb201": (lambda: NB201Space(channels=4, cells_per_stage=1), (3, 8, 8), "image",
              "|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_1x1~1|nor_conv_3x3~2|"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_export_round_trips_with_dynamic_batch(case, tmp_path):
    make_space, shape, kind, text = CASES[case]
    space, task = make_space(), synthetic_task(shape, kind)
    arch = space.parse(text)
    net = space.build(arch, task)
    # train mode in, train mode out; BatchNorm statistics made non-trivial so eval mode matters
    with torch.no_grad():
        net.train()(task.train[0])
    res = export_onnx(net, task.train[0][:2], tmp_path / "m.onnx", metadata={"nasforge.arch": text})
    assert net.training
    assert res.path.is_file() and res.max_abs_diff <= 1e-4 and res.check_batch == 5
    assert not list(tmp_path.glob(".*tmp"))  # nothing half-written left behind
    net.eval()
    for batch in (1, 7):  # neither is the example's batch size 2
        x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(batch))
        out = run_onnx(res.path, x)
        with torch.no_grad():
            ref = net(x).numpy()
        assert out.shape == (batch, 10)
        assert np.max(np.abs(out - ref)) <= 1e-4
    session = ort.InferenceSession(str(res.path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == "batch"
    assert session.get_modelmeta().custom_metadata_map["nasforge.arch"] == text


@pytest.mark.slow  # torch.export takes 5-20 s on 2 busy cores
def test_dynamo_exporter_round_trips(tmp_path):
    pytest.importorskip("onnxscript")
    net = torch.nn.Sequential(torch.nn.Conv1d(1, 3, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(3 * 6, 4))
    res = export_onnx(net, torch.randn(1, 1, 8), tmp_path / "d.onnx", exporter="dynamo")
    assert res.exporter == "dynamo" and res.max_abs_diff <= 1e-4
    assert run_onnx(res.path, torch.randn(9, 1, 8)).shape == (9, 4)
    assert not (tmp_path / "d.onnx.data").exists()  # weights inside the one file


def test_mismatch_is_refused_and_nothing_written(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_export, "_compare", lambda model, path, x: 0.5)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    with pytest.raises(ExportError, match="differs from PyTorch by 0.5"):
        export_onnx(net, torch.randn(2, 1, 4), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments_are_named(tmp_path):
    net = torch.nn.Linear(4, 2)
    with pytest.raises(ConfigError, match="exporter 'jit'"):
        export_onnx(net, torch.randn(2, 4), tmp_path / "m.onnx", exporter="jit")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="check_batch = 2"):
        export_onnx(net, torch.randn(2, 4), tmp_path / "m.onnx", check_batch=2)


def test_missing_extra_names_the_install_command(tmp_path, monkeypatch, caplog):
    from nasforge.errors import MissingDependencyError

    monkeypatch.setattr(onnx_export, "missing_packages", lambda exporter="auto": ["onnxruntime"])
    with pytest.raises(MissingDependencyError, match=r"onnxruntime.*pip install 'nasforge\[onnx\]'"):
        export_onnx(torch.nn.Linear(4, 2), torch.randn(2, 4), tmp_path / "m.onnx")
    best = tmp_path / "best"
    best.mkdir()
    (best / "arch.txt").write_text("x\n")
    (best / "model.pt").write_bytes(b"")
    with caplog.at_level("WARNING"):
        assert export_best(tmp_path, ChainSpace(), synthetic_task((1, 8, 8), "image")) is None
    assert [r.getMessage() for r in caplog.records] == [
        "best/model.onnx skipped: onnxruntime not installed (pip install 'nasforge[onnx]')"]


def test_export_best_of_a_run_directory(tmp_path):
    space, task = CASES["chain-2d"][0](), synthetic_task((1, 8, 8), "image")
    arch = space.parse(CASES["chain-2d"][3])
    net = space.build(arch, task)
    best = tmp_path / "best"
    best.mkdir()
    (best / "arch.txt").write_text(str(arch) + "\n")
    (best / "metrics.json").write_text(json.dumps({"trial": 4, "metrics": {}, "cost": {}}))
    torch.save(net.state_dict(), best / "model.pt")
    path = export_best(tmp_path, space, task)
    assert path == best / "model.onnx"
    x = task.test[0]
    with torch.no_grad():
        ref = net.eval()(x).numpy()
    assert np.max(np.abs(run_onnx(path, x) - ref)) <= 1e-4
    meta = ort.InferenceSession(str(path)).get_modelmeta().custom_metadata_map
    assert meta["nasforge.trial"] == "4" and meta["nasforge.space"] == "chain"
    # weights of another architecture: logged and skipped, and the stale file removed
    other = space.parse("[C(32,3,1,1,1), SM(10)]")
    torch.save(space.build(other, task).state_dict(), best / "model.pt")
    assert export_best(tmp_path, space, task) is None
    assert not path.exists()


# -- a run's best/model.onnx and `nasforge export` ----------------------------------------------


def cli(*args: str) -> int:
    return main_in_process(*args)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A 3-trial search on digits (real data, 1 epoch each), finished and closed."""
    from nasforge.config import load_config
    from nasforge.run.rundir import Run

    out = tmp_path_factory.mktemp("runs") / "r"
    cfg = load_config(None, {"budget": 3, "seed": 1, "evaluator_options": {"epochs": 1},
                             "space_options": {"features": [16], "min_conv": 2, "max_conv": 3}})
    with Run.create(cfg, out) as run:
        run.search()
    return out


def test_run_writes_best_model_onnx_matching_best_model_pt(small_run):
    from nasforge.experiments import open_run

    ctx = open_run(small_run)
    arch = ctx.space.parse((small_run / "best" / "arch.txt").read_text().strip())
    net = ctx.space.build(arch, ctx.task)
    net.load_state_dict(torch.load(small_run / "best" / "model.pt", weights_only=True))
    x = ctx.task.test[0][:33]
    with torch.no_grad():
        ref = net.eval()(x).numpy()
    out = run_onnx(small_run / "best" / "model.onnx", x)
    assert np.max(np.abs(out - ref)) <= 1e-4
    assert (out.argmax(1) == ref.argmax(1)).all()


def test_export_command(small_run, capsys):
    best = json.loads((small_run / "best" / "metrics.json").read_text())["trial"]
    assert cli("export", str(small_run), "--format", "onnx") == 0
    assert (small_run / "export" / f"trial-{best}.onnx").is_file()
    assert "weights best/model.pt" in capsys.readouterr().out
    # the same file again is refused, nothing overwritten
    assert cli("export", str(small_run)) == 2
    assert "already exists" in capsys.readouterr().err
    other = next(i for i in range(3) if i != best)
    assert cli("export", str(small_run), "--trial", str(other)) == 2
    err = capsys.readouterr().err
    assert f"trial {other} of" in err and "--untrained" in err
    assert cli("export", str(small_run), "--trial", str(other), "--untrained", "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["trial"] == other and info["weights"].startswith("untrained (seed ")
    assert info["max_abs_diff"] <= 1e-4 and info["path"].endswith(f"trial-{other}-untrained.onnx")
    assert cli("export", str(small_run), "--trial", "99") == 2
    assert "valid trial indices are 0..2" in capsys.readouterr().err
    assert cli("export", str(small_run), "--format", "tflite") == 2
    assert "--format 'tflite'; expected one of onnx" in capsys.readouterr().err
    assert cli("export", str(small_run / "nope")) == 2
    assert "does not exist" in capsys.readouterr().err


def test_export_command_without_the_extra(small_run, capsys, monkeypatch):
    monkeypatch.setattr(onnx_export, "missing_packages", lambda exporter="auto": ["onnx"])
    assert cli("export", str(small_run), "--out", str(small_run / "x.onnx")) == 2
    err = capsys.readouterr().err
    assert "pip install 'nasforge[onnx]'" in err and "Traceback" not in err
    assert not (small_run / "x.onnx").exists()


def test_no_export_skips_model_onnx_and_removes_a_stale_one(tmp_path):
    """``export: false`` (``--no-export``) writes no best/model.onnx and never leaves one of an
    earlier best describing another trial; it may change on resume."""
    from nasforge.config import load_config
    from nasforge.run.rundir import Run

    out = tmp_path / "r"
    cfg = load_config(None, {"budget": 2, "seed": 3, "export": False, "evaluator_options": {"epochs": 1},
                             "space_options": {"features": [8], "min_conv": 1, "max_conv": 1}})
    with Run.create(cfg, out) as run:
        run.search()
    assert (out / "best" / "arch.txt").is_file() and (out / "best" / "model.pt").is_file()
    assert not (out / "best" / "model.onnx").exists()
    (out / "best" / "model.onnx").write_bytes(b"stale")  # as if an earlier best had been exported
    assert cli("search", "--resume", str(out), "--budget", "3", "--no-export", "-q") == 0
    assert not (out / "best" / "model.onnx").exists()
    assert "export: false" in (out / "config.yaml").read_text()
