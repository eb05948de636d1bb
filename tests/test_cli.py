"""The command line: the happy path, and bad input giving one line, a non-zero exit, no traceback."""

from __future__ import annotations

import hashlib
import json

import h5py
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from onnxattr import pipeline
from onnxattr.cli import app
from onnxattr.space import ModelSpace

from .models import TinyVGG, export

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "photos"
    d.mkdir()
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return d


@pytest.fixture
def model(tmp_path):
    return export(TinyVGG(), tmp_path / "vgg.onnx", (1, 3, 24, 24))


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_probe_add_list_remove(tmp_path, photos, model):
    space = tmp_path / "s.h5"
    r = run("probe", "build", photos, "--space", space, "--size", 20, "--n", 4, "--seed", 0)
    assert r.exit_code == 0, r.output
    r = run("nodes", model)
    assert r.exit_code == 0 and "MaxPool" in r.output and "★" in r.output
    r = run("nodes", model, "--candidates")
    assert r.exit_code == 0 and "MaxPool" in r.output and "Conv" not in r.output
    pre = tmp_path / "pre.json"
    r = run("add", model, "--space", space, "--preset", "imagenet", "--name", "vgg",
            "--save-preprocessing", pre, "--batch-size", 3, "--map-dtype", "float32")
    assert r.exit_code == 0, r.output
    assert "verified against onnxruntime" in r.output
    r = run("add", model, "--space", space, "--preprocessing", pre, "--name", "vgg2",
            "--methods", "saliency", "--map-dtype", "float32")
    assert r.exit_code == 0, r.output
    rules = tmp_path / "rules.toml"
    rules.write_text('Conv = "zplus"\n')
    r = run("add", model, "--space", space, "--name", "vgg_lrp", "--methods", "lrp",
            "--lrp-preset", "epsilon_plus_flat", "--lrp-rules", rules)
    assert r.exit_code == 0, r.output
    recorded = json.loads(next(m for m in ModelSpace(space).models() if m.name == "vgg_lrp")
                          .attrs["methods"])["lrp"]
    assert recorded["preset"] == "epsilon_plus_flat" and recorded["rules"] == str(rules)
    r = run("list", "--space", space)
    assert r.exit_code == 0 and "vgg2" in r.output
    s = ModelSpace(space)
    assert s.read_maps("vgg", "saliency").shape == (4, 20, 20)
    # same preprocessing from the saved file; only the batch size differs (lossless storage)
    np.testing.assert_allclose(s.read_maps("vgg", "saliency"), s.read_maps("vgg2", "saliency"),
                               rtol=1e-5)
    r = run("remove", "vgg", "--space", space)
    assert r.exit_code == 0
    assert [m.name for m in s.models()] == ["vgg2", "vgg_lrp"]


def _one_line_error(r, pattern: str) -> None:
    assert r.exit_code != 0
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    text = r.output.strip()
    assert text.startswith("error:") and pattern in text, text
    assert "Traceback" not in text


@pytest.mark.parametrize("case", ["missing", "not-onnx", "unknown-node", "foreign-space",
                                  "bad-preset", "bad-size"])
def test_bad_input(tmp_path, model, case):
    space = tmp_path / "s.h5"
    if case == "missing":
        _one_line_error(run("add", tmp_path / "nope.onnx", "--space", space), "no such file")
    elif case == "not-onnx":
        (tmp_path / "x.onnx").write_text("garbage")
        _one_line_error(run("nodes", tmp_path / "x.onnx"), "not a readable ONNX model")
    elif case == "unknown-node":
        node = "/features/features.1/Relu"
        _one_line_error(run("add", model, "--encoder-node", node + "x", "--space", space),
                        f"did you mean '{node}'")
    elif case == "foreign-space":
        with h5py.File(space, "w") as f:
            f["data"] = np.zeros(3)
        before = digest(space)
        _one_line_error(run("add", model, "--space", space), "not written by onnxattr")
        assert digest(space) == before
    elif case == "bad-preset":
        _one_line_error(run("add", model, "--space", space, "--preset", "nope"), "unknown preset")
    elif case == "bad-size":
        _one_line_error(run("add", model, "--space", space, "--input-size", "32x32"),
                        "input shape")
    assert not space.exists() or case == "foreign-space"


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    _one_line_error(run("probe", "build", tmp_path / "empty", "--space", tmp_path / "s.h5"),
                    "no images")


def test_interrupted_add_leaves_space_unchanged(tmp_path, photos, model, monkeypatch):
    space = tmp_path / "s.h5"
    assert run("probe", "build", photos, "--space", space, "--size", 16).exit_code == 0
    assert run("add", model, "--space", space, "--name", "a").exit_code == 0
    before = digest(space)

    calls = {"n": 0}
    real = pipeline.attribute

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "attribute", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pipeline.add_model(space, model, name="b", batch_size=2, progress=False)
    assert digest(space) == before

    # A failure while writing (disk full, say) removes the half-written group.
    monkeypatch.setattr(pipeline, "attribute", real)

    def full_disk(self, *a, **k):
        raise OSError("No space left on device")

    monkeypatch.setattr(h5py.Group, "create_dataset", full_disk)
    with pytest.raises(OSError):
        pipeline.add_model(space, model, name="b", progress=False)
    monkeypatch.undo()
    with h5py.File(space) as f:
        assert sorted(f["models"]) == ["a"]
    assert [m.name for m in ModelSpace(space).models()] == ["a"]
