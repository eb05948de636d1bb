"""Fault injection: writes that fail midway, a full disk, a writer killed while writing.

Each trial asserts that the space still opens, `onnxattr check` finds nothing damaged, and every
model stored before the fault reads back bit for bit.
"""

from __future__ import annotations

import errno
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from onnxattr import segments
from onnxattr.errors import OnnxAttrError, OnnxAttrWarning
from onnxattr.integrity import check_space
from onnxattr.space import ModelSpace

from .conftest import random_probe

ROOT = Path(__file__).resolve().parent.parent


def _space(path: Path, n_models: int = 2) -> dict[str, np.ndarray]:
    s = ModelSpace(path)
    s.write_probe(random_probe(n=8, size=32))
    rng = np.random.default_rng(0)
    maps = {}
    for i in range(n_models):
        s.add_model(
            f"m{i}", {"saliency": rng.normal(size=(8, 32, 32))}, rng.normal(size=(8, 4)), {}
        )
        maps[f"m{i}"] = s.read_maps(f"m{i}", "saliency")  # as stored (float16 by default)
    return maps


def _intact(path: Path, maps: dict[str, np.ndarray]) -> None:
    report = check_space(path)
    assert report.ok, report.damaged
    names = {m.name for m in ModelSpace(path).models()}
    assert set(maps) <= names
    for name, m in maps.items():
        np.testing.assert_array_equal(ModelSpace(path).read_maps(name, "saliency"), m)


class Faults:
    """Fails the ``fail_at``-th write operation of a commit with ``err``: the creation of each
    file, each write call (made small, 4 KB, so that a segment takes several), each fsync,
    rename and folder sync. (`test_a_size_limit_at_any_byte` fails writes at the kernel.)"""

    SEAM = ["create", "write", "fsync", "replace", "fsync_dir"]

    def __init__(self, fail_at: int | None = None, err: int = errno.ENOSPC,
                 block: int = 4096) -> None:
        self.fail_at, self.err, self.block, self.n = fail_at, err, block, 0

    def wrap(self, real):
        def wrapped(*a, **k):
            self.n += 1
            if self.n == self.fail_at:
                raise OSError(self.err, os.strerror(self.err))
            return real(*a, **k)
        return wrapped

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(segments, "WRITE_BLOCK", self.block)
        for name in self.SEAM:
            monkeypatch.setattr(segments, name, self.wrap(getattr(segments, name)))


def _state(path: Path) -> dict:
    """What a space holds, as committed: its manifest and every model's maps."""
    with h5py.File(path) as f:
        manifest = segments.read_manifest(f)
    space = ModelSpace(path)
    return {"manifest": manifest,
            "maps": {m.name: space.read_maps(m.name, "saliency") for m in space.models()}}


def _same(a: dict, b: dict) -> bool:
    return a["manifest"] == b["manifest"] and a["maps"].keys() == b["maps"].keys() and all(
        np.array_equal(a["maps"][k], b["maps"][k]) for k in a["maps"])


def _like(now: dict, after: dict, before: dict) -> bool:
    """``now`` is the op's result: what ``after`` (the same op, fault-free) holds, with each
    segment the op did not touch committed bytes as ``before``."""
    m, a, b = now["manifest"], after["manifest"], before["manifest"]
    untouched = all(m["models"].get(k) == e for k, e in b["models"].items()
                    if a["models"].get(k) == e)
    return (untouched and m["models"].keys() == a["models"].keys()
            and m["cache"].keys() == a["cache"].keys() and now["maps"].keys() == after["maps"].keys()
            and all(np.array_equal(now["maps"][k], after["maps"][k]) for k in now["maps"]))


def _no_leftovers(path: Path) -> None:
    with h5py.File(path) as f:
        named = {e["file"] for _, _, e in segments.entries(segments.read_manifest(f))}
    assert set(os.listdir(segments.segment_dir(path))) == named
    assert [p.name for p in path.parent.iterdir() if ".tmp-" in p.name] == []


def _op_add(path: Path) -> None:
    rng = np.random.default_rng(1)
    ModelSpace(path).add_model("new", {"saliency": rng.normal(size=(8, 32, 32))},
                               rng.normal(size=(8, 4)), {})


def _op_overwrite(path: Path) -> None:
    rng = np.random.default_rng(2)
    ModelSpace(path).add_model("m0", {"saliency": rng.normal(size=(8, 32, 32))},
                               rng.normal(size=(8, 4)), {}, overwrite=True)


def _op_remove(path: Path) -> None:
    ModelSpace(path).remove_model("m1")


def _op_features(path: Path) -> None:
    ModelSpace(path).replace_features("m0", np.ones((8, 3)), {"pool": "mean"})


def _op_cache(path: Path) -> None:
    from onnxattr.analysis.distances import pairwise_matrix
    from onnxattr.analysis.estimators import MapCosine

    mat, _ = pairwise_matrix(path, MapCosine("saliency"))  # the cache is optional: served anyway
    assert mat.values.shape == (2, 2)


def _op_probe(path: Path) -> None:
    ModelSpace(path.with_name("new.h5")).write_probe(random_probe(n=8, size=32))


OPS = {"add": _op_add, "overwrite": _op_overwrite, "remove": _op_remove,
       "features": _op_features, "cache": _op_cache, "probe build": _op_probe}
ERRNOS = (errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EFBIG)


def fault_campaign(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, every_errno: bool,
                   block: int = 4096) -> Counter:
    """Every write operation of every kind of commit failed (with each of ENOSPC, EIO, EDQUOT
    and EFBIG, or with one of them in turn): the space still checks out, holds exactly what it
    held before (or, when the fault came after the commit point, exactly the result), with no
    stray file, and a failure is one OnnxAttrError line naming the OS error."""
    base = tmp_path / "base"
    base.mkdir()
    _space(base / "s.h5")
    before = _state(base / "s.h5")
    trials = Counter()
    for op_name, op in OPS.items():
        clean = tmp_path / f"{op_name}-clean"
        shutil.copytree(base, clean)
        counter = Faults(block=block)
        with monkeypatch.context() as m:
            counter.install(m)
            op(clean / "s.h5")
        after = _state(clean / "s.h5")
        for k in range(1, counter.n + 1):
            for err in ERRNOS if every_errno else [ERRNOS[k % len(ERRNOS)]]:
                trial = tmp_path / f"t-{op_name}-{err}-{k}"
                shutil.copytree(base, trial)
                path = trial / "s.h5"
                with monkeypatch.context() as m, warnings.catch_warnings():
                    warnings.simplefilter("ignore", OnnxAttrWarning)  # a failed folder sync
                    Faults(k, err, block).install(m)
                    try:
                        op(path)
                        failed = None
                    except OnnxAttrError as exc:
                        failed = str(exc)
                assert check_space(path).ok, (op_name, err, k)
                now = _state(path)
                if failed is not None:
                    assert "\n" not in failed and os.strerror(err) in failed, failed
                    assert _same(now, before), (op_name, err, k)
                else:
                    assert _like(now, after, before) or (
                        op_name == "cache" and _same(now, before)), (op_name, err, k)
                _no_leftovers(path)
                if op_name == "probe build" and path.with_name("new.h5").exists():
                    assert ModelSpace(path.with_name("new.h5")).has_probe()
                shutil.rmtree(trial)
                trials[op_name] += 1
    return trials


def test_a_fault_at_any_write_leaves_the_space_as_before_or_as_after(tmp_path, monkeypatch):
    trials = fault_campaign(tmp_path, monkeypatch, every_errno=False)
    assert set(trials) == set(OPS) and min(trials.values()) >= 5, trials


@pytest.mark.slow
def test_every_errno_at_every_write(tmp_path, monkeypatch):
    trials = fault_campaign(tmp_path, monkeypatch, every_errno=True, block=2048)
    print(dict(trials), sum(trials.values()))
    assert sum(trials.values()) >= 500, trials


def test_a_failed_write_is_one_error_line_at_the_command_line(tmp_path, monkeypatch):
    """`onnxattr remove` and `onnxattr probe build` with a fault at each of their writes."""
    from typer.testing import CliRunner

    from onnxattr.cli import app

    path = tmp_path / "s.h5"
    _space(path)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.fromarray(np.full((20, 20, 3), 40 * i, np.uint8)).save(photos / f"{i}.png")
    commands = {"remove": ["remove", "m1", "-s", str(path)],
                "probe build": ["probe", "build", str(photos), "--space", str(tmp_path / "n.h5"),
                                "--size", "16"]}
    for cmd, args in commands.items():
        for k in range(1, 4):
            with monkeypatch.context() as m:
                Faults(k, errno.EDQUOT).install(m)
                r = CliRunner().invoke(app, args)
            lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
            assert r.exit_code == 1 and lines[-1].startswith("error:"), (cmd, k, r.output)
            assert [ln for ln in lines if ln.startswith("error:")] == lines[-1:], r.output
            assert "Disk quota exceeded" in lines[-1] and "Traceback" not in r.output
    assert check_space(path).ok and ModelSpace(path).has_model("m1")


def test_a_size_limit_at_any_byte(tmp_path):
    """The kernel's per-file size limit (RLIMIT_FSIZE: EFBIG), stepped 256 bytes at a time from
    below the index's size to the segment's: a write of an `add` fails at every stretch of its
    bytes, in HDF5's own driver; the space stays as it was until the limit lets the add through."""
    path = tmp_path / "s.h5"
    _space(path)
    before = _state(path)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    refused = 0
    try:
        for limit in range(256, 1 << 20, 256):
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
            try:
                _op_add(path)
                break
            except OnnxAttrError as exc:
                assert "File too large" in str(exc) and "\n" not in str(exc), str(exc)
                refused += 1
            finally:
                resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            assert check_space(path).ok and _same(_state(path), before), limit
            _no_leftovers(path)
    finally:
        signal.signal(signal.SIGXFSZ, old_handler)
    print(f"{refused} limits refused cleanly")
    assert refused >= 20 and ModelSpace(path).has_model("new")
    _no_leftovers(path)


def test_not_enough_disk_space_refused_before_writing(tmp_path, monkeypatch):
    path = tmp_path / "s.h5"
    maps = _space(path)
    before = path.read_bytes()
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=10_000))
    rng = np.random.default_rng(1)
    with pytest.raises(OnnxAttrError, match="not enough free disk space"):
        ModelSpace(path).add_model(
            "new", {"saliency": rng.normal(size=(8, 32, 32))}, rng.normal(size=(8, 4)), {}
        )
    monkeypatch.undo()
    assert path.read_bytes() == before
    _intact(path, maps)


KILL_WRITER = """
import sys, numpy as np
from onnxattr.space import ModelSpace
s, rng = ModelSpace(sys.argv[1]), np.random.default_rng(int(sys.argv[2]))
for i in range(1000):
    s.add_model(f"k{i}", {"saliency": rng.normal(size=(8, 32, 32)),
                          "elrp": rng.normal(size=(8, 32, 32))}, rng.normal(size=(8, 4)), {})
    if i % 3 == 2:
        s.remove_model(f"k{i - 1}")
    print(f"k{i}", flush=True)
"""

# Another process reading every model, checksums verified, while the writer is killed: it must
# never see a model half-committed (a name without its segment, a segment half-written).
READER = """
import sys, time
from onnxattr.space_reader import read_space
reads = 0
deadline = time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    with read_space(sys.argv[1]) as r:  # one read session: what one index names
        for name in r.names():
            for method in r.methods(name):
                r.verify_maps(name, method)
            r.features(name)  # checked against its checksum too
    reads += 1
print(reads, flush=True)
"""


def kill_trials(tmp_path: Path, trials: int, sig: int = signal.SIGKILL) -> dict[str, int]:
    """Start a writer adding (and now and then removing) models in a loop while another process
    reads the space, kill the writer at a random moment, check the space."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    figures = {"trials": 0, "intact": 0, "models stored before the kill": 0, "reads": 0}
    rnd = random.Random(0)
    for t in range(trials):
        path = tmp_path / f"kill{t}.h5"
        maps = _space(path)
        p = subprocess.Popen([sys.executable, "-c", KILL_WRITER, str(path), str(t)], env=env,
                             stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().startswith("k0")  # running, one model stored
        delay = rnd.uniform(0.0, 0.8)
        reader = subprocess.Popen([sys.executable, "-c", READER, str(path), str(delay + 1.0)],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        time.sleep(delay)
        p.send_signal(sig)
        out, _ = p.communicate(timeout=60)
        reads, errors = reader.communicate(timeout=120)
        assert reader.returncode == 0, errors  # no read ever met a half-committed model
        stored = {"k0", *out.split()}
        _intact(path, maps)
        names = {m.name for m in ModelSpace(path).models()}
        removable = {f"k{i - 1}" for i in range(2, 1000, 3)}  # removed right after k{i} is added
        assert stored - removable <= names  # every model reported stored (and kept) survived
        assert check_space(path).ok
        figures["trials"] += 1
        figures["intact"] += 1
        figures["models stored before the kill"] += len(names) - len(maps)
        figures["reads"] += int(reads)
    return figures


SIGNAL_IN_A_WRITE = """
import os, signal, sys, time
import numpy as np
from onnxattr import segments
from onnxattr.space import ModelSpace
sig = int(sys.argv[2])
# as in a terminal: a process inherits an ignored SIGINT, and earlier tests' libraries leave the
# test process with one
signal.signal(signal.SIGINT, signal.default_int_handler)
if sig == signal.SIGTERM:
    signal.signal(sig, lambda *_: print("handled after", done, flush=True))
done = []
real = segments.replace

def replace(src, dst):  # the signal arrives inside the commit, just before the index swap
    if str(dst) == sys.argv[1]:
        os.kill(os.getpid(), sig)
        time.sleep(0.05)  # a handler would have run by now
    real(src, dst)
    if str(dst) == sys.argv[1]:
        done.append("the commit")

segments.replace = replace
rng = np.random.default_rng(0)
ModelSpace(sys.argv[1]).add_model("new", {"saliency": rng.normal(size=(8, 32, 32))},
                                  rng.normal(size=(8, 4)), {})
print("wrote", flush=True)
print("after the add", flush=True)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_a_write_acts_after_it(tmp_path, sig):
    """An interrupt inside a commit (here: just before the index is swapped) acts after the
    commit, never between a renamed segment and the index that names it. Run in a
    fresh process with Ctrl-C's default handler, as a user's `onnxattr add` in a terminal: the
    test process may hold an ignored SIGINT, left by libraries that earlier tests loaded."""
    maps = _space(tmp_path / "s.h5")
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    r = subprocess.run([sys.executable, "-c", SIGNAL_IN_A_WRITE, str(tmp_path / "s.h5"), str(sig)],
                       env=env, capture_output=True, text=True, timeout=120)
    if sig == signal.SIGINT:  # the commit finished, then Ctrl-C acted: KeyboardInterrupt
        assert "wrote" not in r.stdout and r.returncode != 0 and "KeyboardInterrupt" in r.stderr
    else:  # delivered once, after the commit
        assert r.stdout.splitlines() == ["handled after ['the commit']", "wrote", "after the add"]
        assert r.returncode == 0, r.stderr
    _intact(tmp_path / "s.h5", maps)
    assert ModelSpace(tmp_path / "s.h5").has_model("new")  # committed before the signal acted
    _no_leftovers(tmp_path / "s.h5")


def test_writer_killed_while_writing(tmp_path):
    kill_trials(tmp_path, trials=2)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_writer_killed_while_writing_many(tmp_path, sig):
    figures = kill_trials(tmp_path, trials=10, sig=sig)
    assert figures["intact"] == figures["trials"] == 10
