"""Manifest add: parsing, one writer, failures reported, reruns skip; local Ray with 2 workers."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from onnxattr.cli import app
from onnxattr.cluster import add_many, read_manifest
from onnxattr.errors import OnnxAttrError
from onnxattr.pipeline import add_model
from onnxattr.space import MapStorage, ModelSpace

from .conftest import random_probe
from .models import TinyVGG, export

EXACT = MapStorage("float32")


@pytest.fixture(scope="module")
def shelf(tmp_path_factory):
    """Three tiny models and a manifest of four rows, one of them broken (no such node)."""
    d = tmp_path_factory.mktemp("shelf")
    for i in range(3):
        torch.manual_seed(i)
        export(TinyVGG().eval(), d / f"vgg{i}.onnx", (1, 3, 32, 32))
    rows = [
        '[[model]]\npath = "vgg0.onnx"\npreset = "imagenet"\nframework = "pytorch"\ntask = "a"',
        '[[model]]\npath = "vgg1.onnx"\nname = "second"\npreset = "caffe"',
        '[[model]]\npath = "vgg2.onnx"\npreset = "unit"\ntask = "c"',
        '[[model]]\npath = "vgg0.onnx"\nname = "broken"\nencoder_node = "no_such_node"',
    ]
    (d / "models.toml").write_text("\n\n".join(rows) + "\n")
    return d


def _space(tmp_path):
    path = tmp_path / "s.h5"
    ModelSpace(path).write_probe(random_probe(n=5, size=32))
    return path


def test_manifest_formats_agree(shelf, tmp_path):
    toml = read_manifest(shelf / "models.toml")
    rows = [
        {
            "path": str(shelf / "vgg0.onnx"),
            "preset": "imagenet",
            "framework": "pytorch",
            "task": "a",
        },
        {"path": str(shelf / "vgg1.onnx"), "name": "second", "preset": "caffe"},
    ]
    (tmp_path / "m.json").write_text(json.dumps({"models": rows}))
    (tmp_path / "m.csv").write_text(
        "path,name,preset,framework,task\n"
        f"{shelf / 'vgg0.onnx'},,imagenet,pytorch,a\n{shelf / 'vgg1.onnx'},second,caffe,,\n"
    )
    for other in (read_manifest(tmp_path / "m.json"), read_manifest(tmp_path / "m.csv")):
        assert other == toml[:2]
    assert [e.name for e in toml] == ["vgg0", "second", "vgg2", "broken"]
    assert toml[0].path == shelf / "vgg0.onnx" and toml[0].spec() == {"preset": "imagenet"}


@pytest.mark.parametrize(
    "text, match",
    [
        ('[[model]]\npath = "a.onnx"\nsize = 3\n', "unknown field"),
        ('[[model]]\nname = "x"\n', "no 'path'"),
        ('[[model]]\npath = "a.onnx"\n[[model]]\npath = "a.onnx"\n', "appears twice"),
        ("title = 1\n", "lists no models"),
        ("[[model\n", "cannot be parsed"),
    ],
)
def test_manifest_errors(tmp_path, text, match):
    (tmp_path / "m.toml").write_text(text)
    with pytest.raises(OnnxAttrError, match=match):
        read_manifest(tmp_path / "m.toml")


def test_sequential_manifest_add_reports_failure_and_rerun_skips(shelf, tmp_path):
    space = _space(tmp_path)
    logs: list[str] = []
    entries = read_manifest(shelf / "models.toml")
    res = add_many(space, entries, workers=0, methods=["saliency"], log=logs.append,
                   storage=EXACT)
    assert sorted(res.added) == ["second", "vgg0", "vgg2"]
    assert list(res.failed) == ["broken"] and "no_such_node" in res.failed["broken"]
    assert any("1 failed" in m for m in logs), logs
    # what a single add stores, the manifest stores (same maps, metadata from the row)
    ref = tmp_path / "ref.h5"
    ModelSpace(ref).write_probe(ModelSpace(space).read_probe())
    add_model(
        ref,
        shelf / "vgg1.onnx",
        name="second",
        preprocessing={"preset": "caffe"},
        methods=["saliency"],
        progress=False,
        storage=EXACT,
    )
    np.testing.assert_allclose(
        ModelSpace(space).read_maps("second", "saliency"),
        ModelSpace(ref).read_maps("second", "saliency"),
        rtol=1e-5,
        atol=1e-9,
    )
    attrs = {r.name: r.attrs for r in ModelSpace(space).models()}
    assert attrs["vgg0"]["framework"] == "pytorch" and attrs["vgg2"]["task"] == "c"
    again = add_many(space, entries, workers=0, methods=["saliency"], log=logs.append)
    assert sorted(again.skipped) == ["second", "vgg0", "vgg2"] and list(again.failed) == ["broken"]


def test_manifest_add_commits_through_the_pending_file_path(shelf, tmp_path, monkeypatch):
    """A busy space keeps each computed model in its pending file (as `add` does); the rerun
    stores them from there without computing anything."""
    space = _space(tmp_path)
    entries = [e for e in read_manifest(shelf / "models.toml") if e.name != "broken"]
    real = ModelSpace.add_encoded

    def busy(self, *a, **k):
        raise OnnxAttrError(f"{self.path} is still in use by another onnxattr process after 1 s")

    monkeypatch.setattr(ModelSpace, "add_encoded", busy)
    res = add_many(space, entries, workers=0, methods=["saliency"], log=lambda _: None,
                   storage=EXACT)
    assert not res.added and all("computed maps are kept" in m for m in res.failed.values())
    assert all(ModelSpace(space).pending_path(e.name).exists() for e in entries)
    monkeypatch.setattr(ModelSpace, "add_encoded", real)
    monkeypatch.setattr("onnxattr.cluster._compute", lambda *a: pytest.fail("recomputed"))
    again = add_many(space, entries, workers=0, methods=["saliency"], log=lambda _: None,
                     storage=EXACT)
    assert sorted(again.added) == ["second", "vgg0", "vgg2"] and not again.failed
    assert not any(ModelSpace(space).pending_path(e.name).exists() for e in entries)


def test_a_worker_stages_its_segment_and_the_driver_only_commits(shelf, tmp_path, monkeypatch):
    """What a Ray task runs: the worker computes and writes the model's segment itself; the
    space shows it only after the driver's commit. A commit the space refuses keeps the maps
    in the pending file and deletes the staged segment."""
    from onnxattr import segments
    from onnxattr.cluster import Staged, _compute_and_stage
    from onnxattr.store import commit_staged

    space = _space(tmp_path)
    entry = read_manifest(shelf / "models.toml")[0]
    options = {"methods": ["saliency"], "storage": EXACT, "map_size": 32}
    probe = ModelSpace(space).read_probe()
    out = _compute_and_stage(entry, probe, options, str(space), False)
    assert isinstance(out, Staged) and out.staged.segment.tmp.is_file()
    assert ModelSpace(space).model_names() == []  # written, not visible
    commit_staged(ModelSpace(space), out.staged, key="k", overwrite=False)
    assert ModelSpace(space).model_names() == ["vgg0"]
    again = _compute_and_stage(entry, probe, options, str(space), True)
    # the space changes meanwhile: the same name is now taken and overwrite is refused
    with pytest.raises(OnnxAttrError, match="computed maps are kept"):
        commit_staged(ModelSpace(space), again.staged, key="k", overwrite=False)
    assert not again.staged.segment.tmp.exists()
    assert ModelSpace(space).take_pending("vgg0", "k") is not None
    with h5py.File(space) as f:
        named = {e["file"] for _, _, e in segments.entries(segments.read_manifest(f))}
    assert set(p.name for p in segments.segment_dir(space).iterdir()) == named


def test_cli_manifest(shelf, tmp_path):
    space = _space(tmp_path)
    r = CliRunner().invoke(
        app,
        [
            "add",
            str(shelf / "models.toml"),
            "--space",
            str(space),
            "--workers",
            "0",
            "--methods",
            "saliency",
        ],
    )
    assert r.exit_code == 1
    assert "3 added, 0 already in the space, 1 failed" in r.output
    assert "failed broken" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(
        app, ["add", str(shelf / "models.toml"), "--space", str(space), "--name", "x"]
    )
    assert r.exit_code == 1 and "--name apply to one model" in r.output


def test_ray_two_workers(shelf, tmp_path):
    """Local Ray, 2 workers: the failing model is reported, the others land, one writer."""
    pytest.importorskip("ray")
    space = _space(tmp_path)
    logs: list[str] = []
    entries = read_manifest(shelf / "models.toml")
    res = add_many(space, entries, workers=2, methods=["saliency", "grad_input"], log=logs.append,
                   storage=EXACT)
    assert res.workers == 2 and res.nodes == 1
    assert sorted(res.added) == ["second", "vgg0", "vgg2"], (res.failed, logs)
    assert "no_such_node" in res.failed["broken"]
    assert any("running" in m and "done" in m for m in logs)
    seq = tmp_path / "seq.h5"
    ModelSpace(seq).write_probe(ModelSpace(space).read_probe())
    add_many(seq, entries[:1], workers=0, methods=["saliency", "grad_input"], log=logs.append,
             storage=EXACT)
    for m in ("saliency", "grad_input"):
        np.testing.assert_allclose(ModelSpace(space).read_maps("vgg0", m),
                                   ModelSpace(seq).read_maps("vgg0", m), rtol=1e-5, atol=1e-9)


def test_api_add_many_takes_the_manifest_path(shelf, tmp_path):
    import onnxattr

    space = _space(tmp_path)
    assert onnxattr.is_manifest(shelf / "models.toml") and not onnxattr.is_manifest(shelf / "vgg0.onnx")
    res = onnxattr.add_many(space, shelf / "models.toml", workers=0, methods=["saliency"],
                            storage=EXACT, log=lambda _: None)
    assert sorted(res.added) == ["second", "vgg0", "vgg2"] and list(res.failed) == ["broken"]
    assert ModelSpace(space).model_names() == ["second", "vgg0", "vgg2"]
