"""What `add` tells the user: the preprocessing it uses, a warning when it had to guess, and the
framework/task/metadata it stores and `list` shows."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from onnxattr.cli import app
from onnxattr.pipeline import framework_from_producer
from onnxattr.preprocess import Preprocessing
from onnxattr.probe import build_probe
from onnxattr.space import ModelSpace

from .models import TinyVGG, export

runner = CliRunner()


@pytest.fixture
def setup(tmp_path):
    model = export(TinyVGG(), tmp_path / "vgg.onnx", (1, 3, 24, 24))
    space = tmp_path / "s.h5"
    ModelSpace(space).write_probe(build_probe(None, size=24, n=3, seed=0))
    return model, space


def add(model, space, *args):
    return runner.invoke(
        app, ["add", str(model), "--space", str(space), "--methods", "saliency", *map(str, args)]
    )


def test_add_prints_preprocessing_and_warns_without_normalisation(setup):
    model, space = setup
    r = add(model, space, "--name", "guess")
    assert r.exit_code == 0, r.output
    assert "preprocessing: 24x24 nchw rgb, x = (pixel * 1/255 - 0) / 1" in r.output
    assert "warning: no --preset" in r.output
    r = add(model, space, "--name", "given", "--preset", "imagenet")
    assert r.exit_code == 0, r.output
    assert "(0.485, 0.456, 0.406)" in r.output and "preset imagenet" in r.output
    assert "warning" not in r.output
    r = add(model, space, "--name", "values", "--scale", "1", "--mean", "127.5", "--std", "128")
    assert r.exit_code == 0 and "x = (pixel * 1 - 127.5) / 128" in r.output
    assert "warning" not in r.output


def test_framework_task_meta_are_stored_and_listed(setup):
    model, space = setup
    r = add(
        model,
        space,
        "--name",
        "mine",
        "--preset",
        "unit",
        "--framework",
        "pytorch",
        "--task",
        "faces",
        "--meta",
        "dataset=celeba",
        "--meta",
        "epoch=12",
    )
    assert r.exit_code == 0, r.output
    attrs = ModelSpace(space).models()[0].attrs
    assert attrs["framework"] == "pytorch" and attrs["task"] == "faces"
    assert json.loads(attrs["meta"]) == {"dataset": "celeba", "epoch": "12"}
    r = add(model, space, "--name", "inferred", "--preset", "unit")
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["list", "--space", str(space)], env={"COLUMNS": "250"})
    assert r.exit_code == 0, r.output
    row = next(ln for ln in r.output.splitlines() if "mine" in ln)
    assert "pytorch" in row and "faces" in row and "dataset=celeba, epoch=12" in row
    row = next(ln for ln in r.output.splitlines() if "inferred" in ln)
    assert "pytorch" in row  # read off the ONNX producer_name torch writes
    r = add(model, space, "--name", "bad", "--meta", "novalue")
    assert r.exit_code == 1 and "KEY=VALUE" in r.output


def test_framework_from_producer_and_describe():
    assert framework_from_producer("tf2onnx") == "tensorflow"
    assert framework_from_producer("paddle2onnx") == "paddle"
    assert framework_from_producer("something") == ""
    assert (
        Preprocessing.from_preset("minus1to1")
        .describe()
        .endswith("x = (pixel * 1/127.5 - 1) / 1 (preset minus1to1)")
    )


def test_plain_progress_lines_when_not_a_terminal(setup):
    """CliRunner's output is not a terminal: one timed line per stage, no bar redraws."""
    model, space = setup
    r = add(model, space, "--name", "p", "--preset", "unit")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    for stage in ("loaded, truncated, fixed up (", "verified against onnxruntime", "attributed 3 "):
        line = next(ln for ln in lines if stage in ln)
        assert re.search(r"\(\d+\.\d s\)$", line), line
    assert "\r" not in r.output and "━" not in r.output


def test_demo_progress_one_line_per_model_and_stage(tmp_path, monkeypatch):
    import dataclasses

    import model_zoo

    path = export(TinyVGG(), tmp_path / "vgg.onnx", (1, 3, 24, 24))
    entry = model_zoo.get("mobilenet_v2")
    fake = [
        model_zoo.BuiltModel(
            path,
            dataclasses.replace(
                entry, name=f"m{i}", encoder_node="output", preprocessing={"preset": "unit"}
            ),
            {},
            0.0,
            True,
        )
        for i in range(2)
    ]
    monkeypatch.setattr(model_zoo, "build", lambda *a, **k: fake)
    r = runner.invoke(
        app,
        ["demo", "--out", str(tmp_path / "d"), "--n", "4", "--size", "24", "--methods", "saliency"],
    )
    assert r.exit_code == 0, r.output
    for expected in (
        r"zoo: 2 models ready \(\d+\.\d s\)",
        r"\[1/2\] adding m0",
        r"\[2/2\] adding m1",
        r"m0 done in \d+\.\d s",
        r"m1 done in \d+\.\d s",
        r"report: .*\(\d+\.\d s\)",
    ):
        assert re.search(expected, r.output), (expected, r.output)
    assert "\r" not in r.output
