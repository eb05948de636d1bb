"""Reliability: nothing lost, only finite verified data stored, damage detected, images decoded."""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from onnxattr.errors import OnnxAttrError
from onnxattr.pipeline import add_model
from onnxattr.probe import ProbeSet, build_probe, to_rgb
from onnxattr.space import ModelSpace, array_checksum, dataset_checksum

from .conftest import random_probe
from .models import TinyVGG, export


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def space(tmp_path) -> Path:
    """A space of two small stored models (random maps), written through the API."""
    path = tmp_path / "s.h5"
    s = ModelSpace(path)
    s.write_probe(random_probe(n=6, size=16))
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        s.add_model(
            name,
            {"saliency": rng.normal(size=(6, 16, 16))},
            rng.normal(size=(6, 4)),
            {"framework": "test"},
        )
    return path


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "/",
        ".",
        "..",
        "a/maps",
        "a/maps/saliency",
        "a/features",
        "/models/a",
        "models",
        "probe",
        ".pending-a",
        "c",
    ],
)
def test_remove_accepts_only_model_names(space, bad):
    before = digest(space)
    with pytest.raises(OnnxAttrError, match="no model"):
        ModelSpace(space).remove_model(bad)
    assert digest(space) == before
    ModelSpace(space).remove_model("a")
    assert [m.name for m in ModelSpace(space).models()] == ["b"]


def test_checksums_written_and_damage_detected(space):
    with h5py.File(space) as f:
        for path in ("probe/images", "probe/names", "models/a/maps/saliency", "models/a/features"):
            ds = f[path]
            assert ds.attrs["sha256"] == dataset_checksum(ds) == array_checksum(ds[()])
        del ds  # a dataset held open keeps its segment file open
    s = ModelSpace(space)
    good = s.read_maps("a", "saliency")
    with h5py.File(space) as f:  # flip one value of a's segment, as a bad disk sector would
        segment = f["models/a"].file.filename
    with h5py.File(segment, "r+") as f:
        f["model/maps/saliency"][3, 2, 1] += 1.0
    with pytest.raises(OnnxAttrError, match=f"{space}: dataset models/a/maps/saliency is damaged"):
        s.read_maps("a", "saliency")
    np.testing.assert_array_equal(s.read_maps("b", "saliency").shape, good.shape)


def test_unknown_format_version_refused(space):
    with h5py.File(space, "r+") as f:
        f.attrs["format_version"] = 99
    before = digest(space)
    for call in (lambda s: s.models(), lambda s: s.remove_model("a")):
        with pytest.raises(OnnxAttrError, match="format 99"):
            call(ModelSpace(space))
    assert digest(space) == before


class NanOnDark(nn.Module):
    """Finite on bright images, -inf/NaN where an image's mean input is 0 (a black image)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)) * torch.log(x.mean((1, 2, 3), keepdim=True))


def test_nan_on_later_batch_is_refused_naming_the_image(tmp_path):
    probe = random_probe(n=6, size=16)
    probe.images[4] = 0  # the third batch of two: after the onnxruntime check
    probe = ProbeSet(probe.images, probe.names, probe.source, probe.seed)
    path = tmp_path / "s.h5"
    ModelSpace(path).write_probe(probe)
    model = export(NanOnDark(), tmp_path / "nan.onnx", (1, 3, 16, 16))
    before = digest(path)
    with pytest.raises(OnnxAttrError, match=r"NaN/inf on probe images img4\.png; nothing"):
        add_model(path, model, preprocessing={"preset": "unit"}, batch_size=2, progress=False)
    assert digest(path) == before
    # in the first batch, the onnxruntime check sees it; the advice is not a tolerance
    with pytest.raises(OnnxAttrError, match="img4.png.*A tolerance cannot fix this"):
        add_model(path, model, preprocessing={"preset": "unit"}, batch_size=8, progress=False)
    assert digest(path) == before


def _png16_rgb(path: Path, a: np.ndarray) -> None:
    """A 48-bit RGB PNG written by hand (PIL cannot write one)."""
    h, w, _ = a.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    raw = b"".join(b"\0" + a[y].astype(">u2").tobytes() for y in range(h))
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def test_image_modes_convert_correctly(tmp_path):
    ramp = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "gray16.png")
    got = np.asarray(to_rgb(Image.open(tmp_path / "gray16.png")))
    np.testing.assert_allclose(got[..., 0], ramp / 257, atol=0.51)  # not clipped to white
    rgb16 = np.random.default_rng(0).integers(0, 65536, (8, 8, 3)).astype(np.uint16)
    _png16_rgb(tmp_path / "rgb16.png", rgb16)
    np.testing.assert_allclose(
        np.asarray(to_rgb(Image.open(tmp_path / "rgb16.png"))), rgb16 / 257, atol=1.0
    )
    assert to_rgb(Image.new("CMYK", (4, 4), (0, 255, 255, 0))).getpixel((0, 0)) == (255, 0, 0)
    pal = Image.new("P", (4, 4))
    pal.putpalette([0, 0, 255] * 256)
    assert to_rgb(pal).getpixel((0, 0)) == (0, 0, 255)
    assert to_rgb(Image.new("RGBA", (4, 4), (255, 0, 0, 0))).getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(Image.new("LA", (4, 4), (0, 128))).getpixel((0, 0)) == (127, 127, 127)
    assert to_rgb(Image.new("1", (4, 4), 1)).getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.skipif(os.name != "posix", reason="POSIX file names are bytes")
def test_non_utf8_file_name_and_atomic_probe(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (12, 10), (10, 20, 30)).save(os.path.join(bytes(photos), b"caf\xe9.png"))
    Image.new("RGB", (12, 10), (40, 50, 60)).save(photos / "ok.png")
    probe = build_probe(photos, size=8)
    assert sorted(probe.names) == ["caf\\xe9.png", "ok.png"]
    path = tmp_path / "s.h5"
    ModelSpace(path).write_probe(probe)
    assert sorted(ModelSpace(path).read_probe().names) == ["caf\\xe9.png", "ok.png"]
    # a probe write that fails midway leaves no half-written probe set behind
    other = tmp_path / "t.h5"
    bad = ProbeSet(probe.images, ["x.png", "\udce9.png"], probe.source, 0)
    with pytest.raises(UnicodeEncodeError):
        ModelSpace(other).write_probe(bad)
    assert not ModelSpace(other).has_probe()
    folder = other.with_name("t.h5.d")
    assert not other.exists() and (not folder.exists() or not any(folder.iterdir()))


def test_vgg_add_stores_checksummed_maps(tmp_path):
    path = tmp_path / "s.h5"
    ModelSpace(path).write_probe(random_probe(n=3, size=16))
    add_model(
        path,
        export(TinyVGG(), tmp_path / "v.onnx", (1, 3, 16, 16)),
        progress=False,
        methods=["saliency"],
    )
    with h5py.File(path) as f:
        assert f["models/v/maps/saliency"].attrs["sha256"] == dataset_checksum(
            f["models/v/maps/saliency"]
        )


def test_unexpected_exception_is_one_line_with_debug_hint(space, monkeypatch):
    from typer.testing import CliRunner

    from onnxattr.cli import app

    def boom(self):
        raise RuntimeError("something\nnobody foresaw")

    monkeypatch.setattr(ModelSpace, "models", boom)
    r = CliRunner().invoke(app, ["list", "-s", str(space)])
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit)
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: RuntimeError: something nobody")
    assert "--debug" in lines[0] and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["--debug", "list", "-s", str(space)])
    assert isinstance(r.exception, RuntimeError)
