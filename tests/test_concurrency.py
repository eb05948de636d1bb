"""Several processes adding, listing and computing distances on one space at once, with HDF5's own
file locking on and off: nothing is lost, nothing half-written is read, every error is clear."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from onnxattr.errors import OnnxAttrError
from onnxattr.integrity import check_space
from onnxattr.pipeline import add_model
from onnxattr.space import ModelSpace, space_lock

from .conftest import random_probe
from .models import TinyVGG, export

ROOT = Path(__file__).resolve().parent.parent


def _spawn(role: str, space: Path, n: int, ident: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.space_worker", role, str(space), str(n), ident],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_workers(
    space: Path, writers: int, models_each: int, readers: int, reads_each: int, hdf5_locking: bool
) -> list[dict]:
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "HDF5_USE_FILE_LOCKING": "TRUE" if hdf5_locking else "FALSE",
        "ONNXATTR_LOCK_TIMEOUT": "120",
    }
    procs = [_spawn("add", space, models_each, f"w{i}", env) for i in range(writers)]
    procs += [_spawn("read", space, reads_each, f"r{i}", env) for i in range(readers)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


@pytest.mark.parametrize(
    "hdf5_locking,writers,each,readers,reads",
    [
        pytest.param(False, 2, 3, 1, 3, id="hdf5-lock-off"),
        pytest.param(True, 2, 3, 1, 3, id="hdf5-lock-on"),
        pytest.param(False, 4, 6, 3, 8, id="hdf5-lock-off-heavy", marks=pytest.mark.slow),
        pytest.param(True, 4, 6, 3, 8, id="hdf5-lock-on-heavy", marks=pytest.mark.slow),
    ],
)
def test_concurrent_writers_and_readers(tmp_path, hdf5_locking, writers, each, readers, reads):
    """Without the project's lock, the lock-off case loses models silently and the lock-on case
    fails readers with HDF5's 'unable to lock file' (both seen when the lock is disabled)."""
    space = tmp_path / "s.h5"
    ModelSpace(space).write_probe(random_probe(n=6, size=16))
    results = run_workers(
        space,
        writers=writers,
        models_each=each,
        readers=readers,
        reads_each=reads,
        hdf5_locking=hdf5_locking,
    )
    for r in results:
        assert not r["crashes"], r["crashes"][0]
        assert not r["errors"], r["errors"]
        assert r["done"] == (each if r["role"] == "add" else reads)
    names = sorted(m.name for m in ModelSpace(space).models())
    assert names == sorted(f"w{i}_{j}" for i in range(writers) for j in range(each))
    report = check_space(space)
    assert report.ok and all(report.models.values()), report.damaged


def test_writer_waits_for_the_lock_then_gives_up_clearly(tmp_path, monkeypatch, capfd):
    space = tmp_path / "s.h5"
    s = ModelSpace(space)
    s.write_probe(random_probe(n=4, size=8))
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:  # another process in effect: a separate thread with its own lock
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        code = (
            "import sys,time; from onnxattr.space import space_lock\n"
            "with space_lock(sys.argv[1], write=True):\n"
            "    print('held', flush=True); sys.stdin.readline()"
        )
        p = subprocess.Popen(
            [sys.executable, "-c", code, str(space)],
            env=env,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert p.stdout.readline().strip() == "held"
        held.set()
        release.wait(60)
        p.communicate("\n", timeout=30)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert held.wait(60)
        monkeypatch.setenv("ONNXATTR_LOCK_TIMEOUT", "1")
        t0 = time.monotonic()
        with pytest.raises(OnnxAttrError, match="still in use by another onnxattr process"):
            s.add_model("x", {"saliency": np.zeros((4, 8, 8))}, np.zeros((4, 2)), {})
        assert time.monotonic() - t0 >= 1.0
        assert "waiting for another onnxattr process" in capfd.readouterr().err
        # readers are not blocked by a waiting reader, only by the writer: also a clear error
        with pytest.raises(OnnxAttrError, match="still in use"):
            s.models()
    finally:
        release.set()
        t.join()
    with space_lock(space, write=True, timeout=5):
        pass
    assert [m.name for m in s.models()] == []


def test_add_keeps_its_maps_when_it_cannot_write(tmp_path, monkeypatch):
    """The space is busy past the timeout: the computed maps wait beside it, and the retry
    stores them without attributing again."""
    space = tmp_path / "s.h5"
    ModelSpace(space).write_probe(random_probe(n=4, size=16))
    model = export(TinyVGG(), tmp_path / "v.onnx", (1, 3, 16, 16))
    real = ModelSpace.add_encoded

    def busy(self, *a, **k):
        raise OnnxAttrError(f"{self.path} is still in use by another onnxattr process after 1 s")

    monkeypatch.setattr(ModelSpace, "add_encoded", busy)
    with pytest.raises(OnnxAttrError, match=r"computed maps are kept in .*s\.h5\.pending-v\.h5"):
        add_model(space, model, methods=["saliency", "grad_input"], progress=False)
    assert ModelSpace(space).pending_path("v").is_file()
    monkeypatch.setattr(ModelSpace, "add_encoded", real)
    import onnxattr.pipeline as pipeline

    def no_recompute(*a, **k):
        raise AssertionError("maps were recomputed")

    monkeypatch.setattr(pipeline, "attribute", no_recompute)
    logs: list[str] = []
    add_model(space, model, methods=["saliency", "grad_input"], progress=False, log=logs.append)
    assert any("nothing is recomputed" in m for m in logs)
    assert not ModelSpace(space).pending_path("v").exists()
    monkeypatch.undo()
    fresh = tmp_path / "fresh.h5"
    ModelSpace(fresh).write_probe(random_probe(n=4, size=16))
    add_model(fresh, model, methods=["saliency", "grad_input"], progress=False)
    np.testing.assert_array_equal(
        ModelSpace(space).read_maps("v", "grad_input"),
        ModelSpace(fresh).read_maps("v", "grad_input"),
    )
