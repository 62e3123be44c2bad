"""Fuzzing with hypothesis: architecture strings (chain, nb201), config files and small data files
(.npz, IDX, CSV tables). Whatever the input, the library raises a ``NasforgeError`` (or accepts
it), the CLI exits with status 2 and one line on stderr, never a traceback, and nothing on disk
changes. The data files are generated here, then damaged at random.

Many examples run in-process against library functions and ``nasforge.cli.main``; a single
test starts real subprocesses.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nasforge import cli
from nasforge.config import RunConfig, load_config
from nasforge.data import load_task
from nasforge.data.formats import read_idx, read_npz, write_idx
from nasforge.errors import ArchitectureError, DataError, NasforgeError
from nasforge.spaces.chain import ChainArch, ChainSpace
from nasforge.spaces.nb201 import OPS, NB201Arch, parse_cell

FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FEW = settings(FUZZ, max_examples=12)
CHAIN = ChainSpace()  # its construction explores the space once; parsing does not change it


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with a hash of its bytes (directories as such)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def run_cli(args: list[str], cwd: Path) -> tuple[int, str, str]:
    """``nasforge ARGS`` in this process; exit status, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with mock.patch.object(sys, "argv", ["nasforge", *args]), \
                contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main()
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        os.chdir(old)
    return code, out.getvalue(), err.getvalue()


def assert_one_clear_line(code: int, out: str, err: str) -> None:
    assert code == 2, (code, out, err)
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(("error:", "disk full:")), err
    assert len(lines[0]) < 2000, lines[0][:300]


def assert_message(exc: BaseException) -> None:
    """A user-facing error: one line, of bounded length."""
    text = str(exc)
    assert isinstance(exc, NasforgeError), repr(exc)
    assert text and "\n" not in text and len(text) < 2000, text[:300]


# --------------------------------------------------------------------------------------------
# architecture strings

_layer = st.one_of(
    st.builds(lambda f, k, s, p, r: f"C({f},{k},{s},{p},{r})", *[st.integers(0, 40)] * 4,
              st.integers(0, 2)),
    st.builds(lambda a, b, c, d: f"P({a},{b},{c},{d})", *[st.integers(0, 6)] * 4),
    st.builds(lambda u: f"FC({u})", st.integers(0, 200)),
    st.builds(lambda c: f"SM({c})", st.integers(0, 12)),
    st.text(alphabet="CPFSM()[],0123456789 \uff13\u00b2-+._x\n\t", max_size=12),
    st.sampled_from(["C(99999999999999999999,3,1,1,1)", "C(99999999,3,1,1,1)", "C(\uff13\uff12,3,1,1,1)",
                     "FC(4097)", "C(4096,15,1,7,1)", "P(2,16,0,0)", "C(1,1,1,0,1)" * 3]),
)
chain_texts = st.one_of(
    st.lists(_layer, max_size=8).map(lambda ls: "[" + ", ".join(ls) + "]"),
    st.lists(_layer, max_size=8).map(lambda ls: ", ".join(ls)),
    st.text(max_size=60),
)


@FUZZ
@given(text=chain_texts)
def test_chain_strings_parse_or_raise_one_clear_error(text):
    space = CHAIN
    try:
        arch = space.parse(text)
    except NasforgeError as exc:
        assert isinstance(exc, ArchitectureError)
        assert_message(exc)
        return
    assert isinstance(arch, ChainArch)
    assert space.parse(str(arch)) == arch  # what parses, round-trips


_token = st.one_of(st.sampled_from(OPS), st.text(alphabet="nor_conv3x1skip~", max_size=14))
nb201_texts = st.one_of(
    st.lists(st.tuples(_token, st.sampled_from(["0", "1", "2", "3", "\uff10", "-1", "01", ""])),
             min_size=0, max_size=7).map(
        lambda ts: "+".join("|" + "|".join(f"{op}~{s}" for op, s in ts[i:i + 2]) + "|"
                            for i in range(0, max(len(ts), 1), 2))),
    st.text(alphabet="|+~0123nonesk_ip", max_size=80),
    st.text(max_size=40),
)


@FUZZ
@given(text=nb201_texts)
def test_nb201_strings_parse_or_raise_one_clear_error(text):
    try:
        arch = parse_cell(text)
    except NasforgeError as exc:
        assert_message(exc)
        return
    assert isinstance(arch, NB201Arch) and parse_cell(str(arch)) == arch


@FEW
@given(text=chain_texts)
def test_train_cli_refuses_bad_architectures_in_one_line(text):
    # --epochs 0 is refused after the architecture is parsed, so no example ever trains
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        before = snapshot(root)
        assert_one_clear_line(*run_cli(["train", text, "--epochs", "0"], root))
        assert snapshot(root) == before


# --------------------------------------------------------------------------------------------
# config files

_keys = st.sampled_from([*RunConfig.model_fields, "nonsense", "seed ", "", "budget"])
_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
              st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6)
config_bytes = st.one_of(
    st.dictionaries(_keys, _values, max_size=6).map(
        lambda d: yaml.safe_dump(d, allow_unicode=True).encode()),
    st.binary(max_size=200),
    st.text(max_size=200).map(lambda t: t.encode("utf-8")),
    st.text(alphabet="abc: -[]{}\n\t'\"&*!|>%@`#,?\\é", max_size=120).map(
        lambda t: t.encode("latin-1")),
    st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),
)


@FUZZ
@given(raw=config_bytes)
def test_config_files_load_or_raise_one_clear_error(raw):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.yaml"
        path.write_bytes(raw)
        before = snapshot(Path(d))
        try:
            cfg = load_config(path)
        except NasforgeError as exc:
            assert_message(exc)
        else:
            assert isinstance(cfg, RunConfig)
        assert snapshot(Path(d)) == before


@FEW
@given(raw=config_bytes)
def test_search_cli_refuses_bad_configs_in_one_line(raw):
    # --budget 0 makes every example invalid, so none starts a search
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "c.yaml").write_bytes(raw)
        before = snapshot(root)
        assert_one_clear_line(*run_cli(["search", "--config", "c.yaml", "--budget", "0"], root))
        assert snapshot(root) == before


# --------------------------------------------------------------------------------------------
# data files: valid ones, then damaged at random


def damage(raw: bytes, data: st.DataObject) -> bytes:
    """Flip, cut, insert or overwrite a few bytes of a file."""
    how = data.draw(st.sampled_from(["flip", "cut", "insert", "overwrite", "keep"]))
    if not raw or how == "keep":
        return raw
    at = data.draw(st.integers(0, len(raw) - 1))
    if how == "flip":
        return raw[:at] + bytes([raw[at] ^ data.draw(st.integers(1, 255))]) + raw[at + 1:]
    if how == "cut":
        return raw[:at]
    if how == "insert":
        return raw[:at] + data.draw(st.binary(min_size=1, max_size=8)) + raw[at:]
    patch = data.draw(st.binary(min_size=1, max_size=8))
    return raw[:at] + patch + raw[at + len(patch):]


_dtypes = st.sampled_from(["u1", "i1", ">i2", "<i4", "<f4", "<f8", "<i8", "u8", "?", "<c8", "<U3"])


@st.composite
def npz_files(draw: st.DrawFn) -> bytes:
    n, m = draw(st.integers(0, 12)), draw(st.integers(0, 6))
    shape = draw(st.sampled_from([(), (4,), (2, 3), (3, 2, 2), (1, 3, 2, 2)]))
    arrays = {}
    for key, rows in (("x_train", n), ("x_test", m)):
        dt = draw(_dtypes)
        arrays[key] = np.arange(rows * int(np.prod(shape)), dtype=np.int64).reshape(rows, *shape) \
            .astype(dt) if dt != "<U3" else np.full((rows, *shape), "ab")
    for key, rows in (("y_train", n), ("y_test", m)):
        arrays[key] = (np.arange(rows) % draw(st.integers(1, 3))).astype(draw(_dtypes)) \
            if draw(st.booleans()) else np.arange(rows, dtype=np.float64) / 2
    for key in draw(st.lists(st.sampled_from(list(arrays)), max_size=1)):
        del arrays[key]
    buf = io.BytesIO()
    (np.savez_compressed if draw(st.booleans()) else np.savez)(buf, **arrays)
    return damage(buf.getvalue(), draw(st.data()))


@FUZZ
@given(raw=npz_files())
def test_npz_files_load_or_raise_one_clear_error(raw):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "a.npz"
        path.write_bytes(raw)
        before = snapshot(Path(d))
        try:
            task = load_task("arrays", path=str(path))
        except NasforgeError as exc:
            assert_message(exc)
        else:
            assert task.num_classes >= 2 and len(task.test[1]) >= 1
        assert snapshot(Path(d)) == before


@st.composite
def idx_files(draw: st.DrawFn) -> tuple[str, bytes]:
    shape = draw(st.lists(st.integers(0, 5), min_size=1, max_size=3))
    dtype = draw(st.sampled_from(["u1", "i1", ">i2", ">i4", ">f4", ">f8"]))
    arr = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape).astype(dtype)
    name = draw(st.sampled_from(["a.idx", "a.idx.gz"]))
    with tempfile.TemporaryDirectory() as d:
        raw = write_idx(Path(d) / name, arr).read_bytes()
    return name, damage(raw, draw(st.data()))


@FUZZ
@given(file=idx_files())
def test_idx_files_read_or_raise_one_clear_error(file):
    name, raw = file
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        path.write_bytes(raw)
        before = snapshot(Path(d))
        try:
            arr = read_idx(path)
        except NasforgeError as exc:
            assert_message(exc)
        else:
            assert isinstance(arr, np.ndarray)
        assert snapshot(Path(d)) == before


_cell = st.one_of(st.sampled_from(["0.5", "", "nan", "inf", "-1e309", "1e400", "abc", '"1,2"',
                                   "0x10", "1_000", " 7 ", "\x00"]),
                  st.floats(allow_nan=True, allow_infinity=True).map(str),
                  st.text(max_size=6))
_arch = st.one_of(st.just(str(NB201Arch(("none",) * 6))),
                  st.just(str(NB201Arch(("skip_connect",) * 6))), st.text(max_size=10))
table_bytes = st.one_of(
    st.lists(st.tuples(_arch, _cell), max_size=5).map(
        lambda rows: ("arch,acc\n" + "".join(f"{a},{v}\n" for a, v in rows)).encode()),
    st.binary(max_size=100).map(lambda b: b"arch,acc\n" + b),
    st.text(max_size=100).map(lambda t: t.encode("latin-1", "replace")),
    st.integers(131_000, 131_200).map(lambda n: b"arch,acc\n" + b"x" * n + b",1\n"),
)


@FUZZ
@given(raw=table_bytes)
def test_tables_load_or_raise_one_clear_error(raw):
    from nasforge.evaluators.table import TableEvaluator

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.csv"
        path.write_bytes(raw)
        before = snapshot(Path(d))
        try:
            ev = TableEvaluator(path=str(path), search_metric="acc", space="nb201")
        except NasforgeError as exc:
            assert_message(exc)
        else:
            assert len(ev) >= 1
        assert snapshot(Path(d)) == before


# --------------------------------------------------------------------------------------------
# a few real subprocesses: what a user's shell sees


@pytest.mark.slow
def test_hostile_inputs_through_real_subprocesses(tmp_path):
    (tmp_path / "bin.yaml").write_bytes(bytes(range(256)))
    cases = [
        (["search", "--config", "bin.yaml"], "not UTF-8 text"),
        (["train", "[C(99999999999999999999,3,1,1,1), SM(10)]"], "too large"),
    ]
    before = snapshot(tmp_path)
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                          os.environ.get("PYTHONPATH", "")])}
    for args, expected in cases:
        proc = subprocess.run([sys.executable, "-m", "nasforge", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=240)
        assert_one_clear_line(proc.returncode, proc.stdout, proc.stderr)
        assert expected in proc.stderr, (args, proc.stderr)
    assert snapshot(tmp_path) == before


def test_a_huge_value_in_a_message_is_shortened_keeping_both_ends():
    # e.g. a shape with hundreds of dimensions read from a damaged .npy header
    shape = tuple(range(2, 600))
    exc = DataError(f"a.npz: x_train has shape {shape}; expected (n, features)")
    text = str(exc)
    assert len(text) < 2000 and "\n" not in text
    assert text.startswith("a.npz: x_train has shape (2, 3, 4")
    assert text.endswith("598, 599); expected (n, features)") and "characters left out" in text
    assert str(DataError("short message")) == "short message"
