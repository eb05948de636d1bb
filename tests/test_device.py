"""`--device`: validated once, up front, with a one-line error; a failed demo leaves nothing behind."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from model_zoo import demo as demo_mod
from onnxattr.cli import app
from onnxattr.device import resolve_device
from onnxattr.errors import OnnxAttrError

from .models import TinyVGG, export

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def test_resolve_device_names():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    for bad in ("gpu", "cuda:x", "tpu", ""):
        if bad == "":
            assert resolve_device(bad) == torch.device("cpu")
            continue
        with pytest.raises(OnnxAttrError, match="unknown device"):
            resolve_device(bad)


@no_cuda
def test_resolve_device_cuda_without_cuda():
    with pytest.raises(OnnxAttrError, match="no CUDA device.*`device=cpu`"):
        resolve_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_resolve_device_cuda_index_out_of_range():
    with pytest.raises(OnnxAttrError, match="CUDA device"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


@no_cuda
@pytest.mark.parametrize("device", ["cuda", "gpu"])
def test_demo_rejects_device_before_any_work(tmp_path, monkeypatch, device):
    import model_zoo

    def no_build(*a, **k):
        raise AssertionError("the zoo was built before --device was checked")

    monkeypatch.setattr(model_zoo, "build", no_build)
    out = tmp_path / "demo"
    r = CliRunner().invoke(app, ["demo", "--out", str(out), "--device", device])
    assert r.exit_code == 1
    assert r.output.count("\n") == 1 and "error:" in r.output and "Traceback" not in r.output
    assert not out.exists()


@no_cuda
def test_add_rejects_cuda_in_one_line(tmp_path):
    model = export(TinyVGG(), tmp_path / "vgg.onnx", (1, 3, 24, 24))
    r = CliRunner().invoke(
        app, ["add", str(model), "--space", str(tmp_path / "s.h5"), "--device", "cuda"]
    )
    assert r.exit_code == 1 and "no CUDA device" in r.output
    assert not (tmp_path / "s.h5").exists()


def test_demo_that_adds_no_model_leaves_no_space(tmp_path, monkeypatch):
    """Every model fails (here: a wrong encoder node): no empty space file or folder stays behind."""
    import model_zoo

    path = export(TinyVGG(), tmp_path / "vgg.onnx", (1, 3, 24, 24))
    entry = model_zoo.get("mobilenet_v2")
    bad = [
        model_zoo.BuiltModel(
            path, _replace(entry, name=f"m{i}", encoder_node="nope"), {}, 0.0, True
        )
        for i in range(2)
    ]
    monkeypatch.setattr(model_zoo, "build", lambda *a, **k: bad)
    out = tmp_path / "demo"
    with pytest.raises(OnnxAttrError, match="only 0 model"):
        demo_mod.run_demo(
            out, n=2, size=32, methods=["saliency"], progress=False, log=lambda m: None
        )
    assert not out.exists()


def _replace(entry, **kw):
    import dataclasses

    return dataclasses.replace(entry, **kw)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_add_on_cuda_matches_cpu(tmp_path):
    """The same model added on the GPU and on the CPU stores the same maps and features (TF32 off
    while checking: the comparison is not blurred by reduced-precision matmuls)."""
    import numpy as np

    from onnxattr.space import ModelSpace

    model = export(TinyVGG(), tmp_path / "vgg.onnx", (1, 3, 24, 24))
    space = tmp_path / "s.h5"
    runner = CliRunner()
    r = runner.invoke(app, ["probe", "build", "--space", str(space), "--size", "32", "--n", "8"])
    assert r.exit_code == 0, r.output
    for device in ("cpu", "cuda"):
        r = runner.invoke(app, ["add", str(model), "--space", str(space), "--name", device,
                                "--device", device, "--methods", "saliency,grad_input,elrp",
                                "--map-dtype", "float32"])
        assert r.exit_code == 0, r.output
    s = ModelSpace(space)
    for method in ("saliency", "grad_input", "elrp"):
        a, b = (s.read_maps(d, method).reshape(8, -1) for d in ("cpu", "cuda"))
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        assert cos.min() > 0.999, (method, cos)
    np.testing.assert_allclose(s.read_features("cuda"), s.read_features("cpu"), rtol=1e-3,
                               atol=1e-5)
