from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from onnxattr.errors import OnnxAttrError
from onnxattr.probe import build_probe, embedded_probe


def _folder(tmp_path, n=7):
    rng = np.random.default_rng(0)
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    exts = ["jpg", "png", "bmp", "webp", "tiff"]
    for i in range(n):
        img = Image.fromarray(rng.integers(0, 255, (40 + i, 60, 3), dtype=np.uint8))
        where = tmp_path / ("sub/deeper" if i % 2 else "sub")
        img.save(where / f"im{i}.{exts[i % len(exts)]}")
    (tmp_path / "sub" / "broken.jpg").write_bytes(b"not an image")
    (tmp_path / "notes.txt").write_text("ignored")
    return tmp_path


def test_folder_probe_is_recursive_deterministic_and_skips_broken(tmp_path):
    root = _folder(tmp_path)
    with pytest.warns(UserWarning, match="broken.jpg"):
        a = build_probe(root, size=16, seed=3)
    assert len(a) == 7 and a.images.shape == (7, 16, 16, 3) and a.images.dtype == np.uint8
    assert all(not n.startswith("/") for n in a.names) and "sub/deeper/im1.png" in a.names
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = build_probe(root, size=16, seed=3, n=4)
        c = build_probe(root, size=16, seed=4, n=4)
    assert b.names == a.names[:4]
    assert b.names != c.names
    assert len(set(a.hashes)) == 7


def test_center_crop(tmp_path):
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, 10:30] = 255  # the centre square is white, the sides black
    Image.fromarray(img).save(tmp_path / "a.png")
    p = build_probe(tmp_path, size=20)
    assert p.images.min() == 255


def test_empty_folder_is_an_error(tmp_path):
    with pytest.raises(OnnxAttrError, match="no images"):
        build_probe(tmp_path)
    (tmp_path / "x.jpg").write_bytes(b"junk")
    with pytest.raises(OnnxAttrError, match="could be read"), pytest.warns(UserWarning):
        build_probe(tmp_path)


def test_embedded_default_is_real_and_deterministic():
    a, b = embedded_probe(size=24, n=20, seed=0), embedded_probe(size=24, n=20, seed=0)
    assert a.digest == b.digest and a.images.shape == (20, 24, 24, 3)
    assert embedded_probe(size=24, n=20, seed=1).digest != a.digest
    assert any("astronaut" in n for n in a.names)
    assert a.images.std() > 20  # photographs, not blank frames


def test_embedded_probe_is_the_same_on_every_machine(monkeypatch):
    """Fixed digests: built only from photographs of required dependencies (scikit-image,
    matplotlib); an optional package that ships photographs (scikit-learn) changes nothing."""
    import sys
    import types

    from onnxattr.probe import EMBEDDED_DIGESTS

    digest = EMBEDDED_DIGESTS[(224, 64, 0)]
    assert embedded_probe(size=224, n=64, seed=0).digest == digest
    fake = types.ModuleType("sklearn.datasets")
    fake.load_sample_images = lambda: types.SimpleNamespace(
        filenames=["extra.jpg"], images=[np.zeros((40, 40, 3), np.uint8)])
    monkeypatch.setitem(sys.modules, "sklearn", types.ModuleType("sklearn"))
    monkeypatch.setitem(sys.modules, "sklearn.datasets", fake)
    assert embedded_probe(size=224, n=64, seed=0).digest == digest
    monkeypatch.setitem(sys.modules, "sklearn", None)  # not installed
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    p = embedded_probe(size=224, n=64, seed=0)
    assert p.digest == digest and not any("sklearn" in n for n in p.names)


def test_space_compares_its_embedded_digest(tmp_path):
    """A space whose embedded probe differs from this version's default says so on add."""
    from onnxattr.pipeline import add_model
    from onnxattr.space import ModelSpace

    from .models import TinyVGG, export

    model = export(TinyVGG(), tmp_path / "vgg.onnx", (1, 3, 24, 24))
    good = embedded_probe(size=224, n=64, seed=0)
    old = embedded_probe(size=224, n=64, seed=0)
    old.images = old.images.copy()
    old.images[0, 0, 0] ^= 1  # as if built from another photo set
    old.hashes = []
    old.__post_init__()
    for name, probe, warned in (("good", good, False), ("old", old, True)):
        space = tmp_path / f"{name}.h5"
        ModelSpace(space).write_probe(probe)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            add_model(space, model, methods=["saliency"], preprocessing={"preset": "unit"},
                      batch_size=64, progress=False)
        msgs = [str(w.message) for w in caught if "embedded probe set" in str(w.message)]
        assert bool(msgs) == warned, msgs
        assert ModelSpace(space).read_probe().digest == probe.digest
