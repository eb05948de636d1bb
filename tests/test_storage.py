"""Compact map storage: precision, single-file (format 1-2) spaces, --map-size, memory budget."""

from __future__ import annotations

import ctypes.util
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from onnxattr import memory
from onnxattr.analysis.estimators import compute_affinity
from onnxattr.errors import OnnxAttrError
from onnxattr.integrity import check_space, migrate, salvage
from onnxattr.memory import batch_for_budget
from onnxattr.pipeline import add_model
from onnxattr.space import DEFAULT_STORAGE, FORMAT_VERSION, MapStorage, ModelSpace

from .conftest import random_probe
from .models import TinyVGG, export
from .space_factory import create_space


def _maps(rng, n=5, s=16, scale=1.0):
    """Heavy-tailed maps like real saliency, at a given magnitude."""
    return (rng.standard_t(3, size=(n, s, s)) * scale).astype(np.float32)


@pytest.mark.parametrize("scale", [1e-9, 1.0, 1e6])
def test_float16_keeps_relative_precision_at_any_magnitude(tmp_path, scale):
    rng = np.random.default_rng(0)
    maps = _maps(rng, scale=scale)
    path = create_space(tmp_path / "s.h5", 5, 16)
    space = ModelSpace(path)
    space.add_model("m", {"saliency": maps}, np.zeros((5, 2)), {},
                    storage=MapStorage(mantissa_bits=10))
    got = space.read_maps("m", "saliency")
    peak = np.abs(maps).reshape(5, -1).max(1)[:, None, None]
    # float16 after scaling to [-1, 1]: half an ulp (2^-11) relative, or 2^-25 of the peak
    assert np.all(np.abs(got - maps) <= np.maximum(2.0**-11 * np.abs(maps), 2.0**-24 * peak))
    with h5py.File(path) as f:
        assert f["models/m/maps/saliency"].dtype == np.float16
        assert f.attrs["format_version"] == FORMAT_VERSION


@pytest.mark.parametrize("bits", [1, 3, 7])
def test_mantissa_bits_bound_the_error_and_the_cosine(tmp_path, bits):
    rng = np.random.default_rng(1)
    maps = _maps(rng, n=8, s=32)
    path = create_space(tmp_path / "s.h5", 8, 32)
    space = ModelSpace(path)
    space.add_model(
        "m", {"saliency": maps}, np.zeros((8, 2)), {}, storage=MapStorage(mantissa_bits=bits)
    )
    got = space.read_maps("m", "saliency")
    peak = np.abs(maps).reshape(8, -1).max(1)[:, None, None]
    # half an ulp of the kept bits: relative for normal float16, of 2^-14 for subnormal ones
    bound = np.maximum(2.0 ** -(bits + 1) * np.abs(maps), 2.0 ** -(bits + 15) * peak) * 1.0001
    assert np.all(np.abs(got - maps) <= bound)
    a, b = maps.reshape(8, -1), got.reshape(8, -1)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert np.all(1 - cos <= 2.0 ** -(2 * bits + 1))


def _single_file_space(path: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A format-1 space (one HDF5 file, float32 maps, no filter) written by plain h5py."""
    with h5py.File(path, "w") as f:
        f.attrs.update(format="onnxattr-space", format_version=1)
        p = f.create_group("probe")
        images = rng.integers(0, 255, (6, 12, 12, 3), np.uint8)
        hashes = [hashlib.sha256(np.ascontiguousarray(i).tobytes()).hexdigest() for i in images]
        p.create_dataset("images", data=images)
        p.create_dataset("names", data=[f"img{i}.png" for i in range(6)], dtype=h5py.string_dtype())
        p.create_dataset("sha256", data=hashes, dtype=h5py.string_dtype())
        p.attrs.update(size=12, seed=0, source="synthetic",
                       digest=hashlib.sha256("".join(hashes).encode()).hexdigest())
        maps = {}
        for n in ("a", "b"):
            maps[n] = _maps(rng, n=6, s=12)
            g = f.create_group(f"models/{n}")
            g.attrs.update(uid=n * 8, task="")
            g.create_dataset("maps/elrp", data=maps[n])
            g.create_dataset("features", data=rng.normal(size=(6, 4)).astype(np.float32))
    return maps


def test_format1_space_stays_readable_and_migrates(tmp_path):
    """A single-file space reads as before, refuses writes with the command that converts it,
    and `migrate` converts it in place: maps bit for bit, old maps not re-encoded, a backup."""
    rng = np.random.default_rng(2)
    path = tmp_path / "old.h5"
    old = _single_file_space(path, rng)
    space = ModelSpace(path)
    np.testing.assert_array_equal(space.read_maps("a", "elrp"), old["a"])
    before, _ = compute_affinity(path, "elrp", use_cache=False)
    new = old["a"] + 0.5 * _maps(rng, n=6, s=12)
    with pytest.raises(OnnxAttrError, match=f"onnxattr migrate {path}"):
        space.add_model("c", {"elrp": new}, np.zeros((6, 4)), {})
    n, backup = migrate(path)
    assert n == 2 and backup == tmp_path / "old.h5.single" and backup.is_file()
    space.add_model("c", {"elrp": new}, np.zeros((6, 4)), {})
    with h5py.File(path) as f:
        assert f.attrs["format_version"] == FORMAT_VERSION
        assert f["models/a/maps/elrp"].dtype == np.float32  # old maps are not rewritten
        assert f["models/c/maps/elrp"].dtype == np.float16
    assert check_space(path).ok
    after, _ = compute_affinity(path, "elrp")
    np.testing.assert_allclose(after.values[:2, :2], before.values, rtol=1e-6)
    a, c = old["a"].reshape(6, -1), new.reshape(6, -1)
    exact = np.mean((a * c).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(c, axis=1))
    # the default's precision (2 mantissa bits: 1 - cos <= 2^-5 per map; much less on average)
    tol = 2.0 ** -(2 * DEFAULT_STORAGE.mantissa_bits + 3)
    assert after.values[0, 2] == pytest.approx(exact, abs=tol)
    with pytest.raises(OnnxAttrError, match="already a segmented space"):
        migrate(path)


def test_migrate_command(tmp_path):
    from typer.testing import CliRunner

    from onnxattr.cli import app

    path = tmp_path / "old.h5"
    old = _single_file_space(path, np.random.default_rng(3))
    r = CliRunner().invoke(app, ["migrate", str(path), "--no-backup"])
    assert r.exit_code == 0, r.output
    assert not path.with_name("old.h5.single").exists()
    assert ModelSpace(path).model_names() == sorted(old)
    np.testing.assert_array_equal(ModelSpace(path).read_maps("b", "elrp"), old["b"])
    r = CliRunner().invoke(app, ["migrate", str(path)])
    assert r.exit_code == 1 and r.output.strip().splitlines()[-1].startswith("error:")


def test_newer_format_is_refused(tmp_path):
    path = create_space(tmp_path / "s.h5", 2, 4)
    with h5py.File(path, "a") as f:
        f.attrs["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(OnnxAttrError, match="upgrade onnxattr"):
        ModelSpace(path).read_probe()


def test_storage_options_are_checked():
    with pytest.raises(OnnxAttrError, match="float16 or float32"):
        MapStorage(dtype="int8")
    with pytest.raises(OnnxAttrError, match="blosc2"):
        MapStorage(compression="lzma")
    with pytest.raises(OnnxAttrError, match="1..10"):
        MapStorage(mantissa_bits=0)


def test_map_size_is_the_space_s(tmp_path):
    model = export(TinyVGG(), tmp_path / "v.onnx", (1, 3, 32, 32))
    space = tmp_path / "s.h5"
    ModelSpace(space).write_probe(random_probe(n=3, size=40))
    add_model(
        space, model, name="a", preprocessing={"preset": "imagenet"}, map_size=16, progress=False
    )
    add_model(space, model, name="b", preprocessing={"preset": "imagenet"}, progress=False)
    s = ModelSpace(space)
    assert s.map_size() == 16 and s.read_maps("b", "saliency").shape == (3, 16, 16)
    with pytest.raises(OnnxAttrError, match="`map_size=16`"):
        add_model(
            space,
            model,
            name="c",
            preprocessing={"preset": "imagenet"},
            map_size=40,
            progress=False,
        )


def test_batch_for_budget():
    mb = 1 << 20
    # 100 MB used, 50 MB of maps to come, 30 MB per image, 1 GB budget -> 29 images
    assert batch_for_budget(30 * mb, 100 * mb, 50 * mb, 1024 * mb, cap=64) == 29
    assert batch_for_budget(30 * mb, 100 * mb, 50 * mb, 1024 * mb, cap=16) == 16
    assert batch_for_budget(30 * mb, 2000 * mb, 0, 1024 * mb, cap=16) == 1


@pytest.mark.parametrize("fast,expected", [(False, [2, 3, 3, 3]), (True, [2, 2, 2, 3, 2])])
def test_add_chooses_batch_from_measured_cost(tmp_path, monkeypatch, fast, expected):
    """The first batch's measured cost sets the batch size: a budget that leaves room for about
    3 images gives batches of 3 after the first batch of 2. On the fast path, the two batches that
    time one path each (`keep_faster`) keep the first batch's size, so the times compare."""
    from onnxattr import pipeline

    model = export(TinyVGG(), tmp_path / "v.onnx", (1, 3, 32, 32))
    space = tmp_path / "s.h5"
    ModelSpace(space).write_probe(random_probe(n=11, size=32))
    sizes = []
    real = pipeline.attribute
    monkeypatch.setattr(
        pipeline, "attribute", lambda g, x, *a, **k: sizes.append(len(x)) or real(g, x, *a, **k)
    )

    def fake_measure(self):
        from contextlib import contextmanager

        @contextmanager
        def cm():
            self.base = 1000 * memory.MB
            yield self
            self.growth = 2 * 100 * memory.MB  # 100 MB per image

        return cm()

    monkeypatch.setattr(memory.PeakMeter, "measure", fake_measure)
    logs = []
    add_model(
        space,
        model,
        preprocessing={"preset": "imagenet"},
        progress=False,
        memory_mb=1350,
        batch_size=16,
        fast=fast,
        log=logs.append,
    )
    assert sizes == expected
    assert any("100 MB per image" in m and "batch size 3" in m for m in logs), logs


@pytest.mark.skipif(not memory._STATUS.exists(), reason="needs /proc (Linux)")
def test_peak_meter_sees_a_transient_allocation():
    meter = memory.PeakMeter("cpu")
    with meter.measure():
        x = np.ones(64 << 20, dtype=np.uint8)  # 64 MB touched, then freed
        del x
    assert 60 << 20 <= meter.growth <= 80 << 20


_REUSED_HEAP = """
import ctypes, ctypes.util, numpy as np
from onnxattr import memory
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.mallopt(-3, 64 << 20)  # M_MMAP_THRESHOLD: 1 MB blocks come from the heap
libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: and free() never trims it
earlier = [np.ones(1 << 17) for _ in range(300)]  # 300 MB: "the previous model"
pin = np.ones(16)  # keeps the top of the heap in use
del earlier
meter = memory.PeakMeter("cpu")
with meter.measure():
    batch = [np.ones(1 << 17) for _ in range(200)]  # 200 MB: this model's first batch
print(meter.growth)
"""


@pytest.mark.skipif(
    not memory._STATUS.exists() or ctypes.util.find_library("c") is None,
    reason="needs /proc and glibc (Linux)",
)
def test_peak_meter_sees_memory_reused_from_an_earlier_model():
    """In one long-lived process (the demo adds 18 models) the next model's first batch reuses
    heap memory that the previous model freed: without handing it back first, the resident set
    does not grow and the cost read 0 MB per image (the demo's craft_text did), so the batch size
    was not chosen by the budget at all. (A child process: the malloc settings are global.)"""
    out = subprocess.run([sys.executable, "-c", _REUSED_HEAP], capture_output=True, text=True,
                         check=True)
    assert 190 << 20 <= int(out.stdout) <= 230 << 20


def test_features_are_compressed_and_rounded_as_documented(tmp_path):
    """Default: features through Blosc2, 10 mantissa bits (relative error <= 2^-11); float32 maps
    keep features lossless; --feature-bits 23 too."""
    rng = np.random.default_rng(5)
    feats = np.maximum(rng.normal(size=(6, 300)), 0).astype(np.float32) * 1e3  # ReLU-like
    path = create_space(tmp_path / "s.h5", 6, 8)
    space = ModelSpace(path)
    maps = {"elrp": _maps(rng, n=6, s=8)}
    space.add_model("d", maps, feats, {})
    space.add_model("x", maps, feats, {}, storage=MapStorage("float32"))
    space.add_model("l", maps, feats, {}, storage=MapStorage(feature_bits=23))
    stored = space.read_features("d")
    rel = np.abs(stored - feats) / np.where(feats > 0, feats, 1)
    assert 0 < rel.max() <= 2.0**-11 and np.array_equal(stored == 0, feats == 0)
    np.testing.assert_array_equal(space.read_features("x"), feats)
    np.testing.assert_array_equal(space.read_features("l"), feats)
    with h5py.File(path) as f:
        assert f["models/d/features"].compression is not None or f["models/d/features"]._filters
    with pytest.raises(OnnxAttrError, match="feature precision of 0 bits"):
        MapStorage(feature_bits=0)


def test_an_index_apart_from_its_folder_is_refused_and_salvageable(tmp_path):
    """A space is `NAME` and `NAME.d`: an index copied or renamed alone would read (and on its
    next write garbage-collect) another space's segments, so it is refused with what to do;
    moved together it works; salvage makes an independent copy under a new name."""
    rng = np.random.default_rng(4)
    path = tmp_path / "a.h5"
    ModelSpace(path).write_probe(random_probe(n=4, size=8))
    ModelSpace(path).add_model("m", {"saliency": _maps(rng, n=4, s=8)}, np.zeros((4, 2)), {})
    copy = tmp_path / "b.h5"
    shutil.copy(path, copy)
    with pytest.raises(OnnxAttrError, match="copied or renamed apart from it"):
        ModelSpace(copy).models()
    with pytest.raises(OnnxAttrError, match="copied or renamed apart from it"):
        ModelSpace(copy).remove_model("m")
    salvage(copy, tmp_path / "c.h5")
    ModelSpace(tmp_path / "c.h5").remove_model("m")  # independent: the original keeps its model
    assert ModelSpace(path).model_names() == ["m"] and check_space(path).ok
    (tmp_path / "elsewhere").mkdir()
    moved = tmp_path / "elsewhere" / "a.h5"
    path.rename(moved)
    (tmp_path / "a.h5.d").rename(tmp_path / "elsewhere" / "a.h5.d")
    assert ModelSpace(moved).model_names() == ["m"] and check_space(moved).ok


def test_migrate_messages_name_the_parameter_in_the_api_and_the_flag_in_the_cli(tmp_path):
    from typer.testing import CliRunner

    from onnxattr.cli import app
    from onnxattr.cli._app import cli_terms

    path = tmp_path / "old.h5"
    _single_file_space(path, np.random.default_rng(5))
    path.with_name("old.h5.single").write_bytes(b"an earlier backup")
    with pytest.raises(OnnxAttrError, match="pass `backup=False`"):
        migrate(path)
    r = CliRunner().invoke(app, ["migrate", str(path)])
    assert r.exit_code == 1 and "pass --no-backup" in r.output and "backup=" not in r.output
    assert cli_terms("with `workers=0`, `use_cache=False`, `address`") == (
        "with --workers 0, --no-cache, --address")
