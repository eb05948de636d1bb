"""What grad_input and elrp measure the input from: with a common probe-space reference, two models
that compute the same function of the probe pixels through different preprocessing get the same
maps; with the model's own zero (as before) they do not."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import onnxattr
from onnxattr.errors import OnnxAttrError
from onnxattr.preprocess import Preprocessing
from onnxattr.space import MapStorage, ModelSpace
from onnxattr.space_reader import read_space

from .conftest import random_probe
from .models import TinyResNet, export, randomize_bn

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
BGR_RAW = {"color": "bgr", "scale": 1.0, "mean": [0.0], "std": [1.0], "input_size": [32, 32]}
EXACT = MapStorage("float32")


class FromBgr255(nn.Module):
    """The same function of the pixels as `net` under ImageNet preprocessing, for input given as
    BGR pixel values 0-255: what a Caffe- or OpenCV-style export of one model looks like."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net((z.flip(1) / 255 - self.mean) / self.std)


@pytest.fixture(scope="module")
def twins(tmp_path_factory) -> dict[str, object]:
    """One TinyResNet exported twice: as is (ImageNet input) and behind a BGR 0-255 interface."""
    d = tmp_path_factory.mktemp("twins")
    torch.manual_seed(0)
    net = randomize_bn(TinyResNet())
    return {
        "imagenet": export(net, d / "imagenet.onnx", (2, 3, 32, 32)),
        "bgr255": export(FromBgr255(net), d / "bgr255.onnx", (2, 3, 32, 32)),
    }


def _space(path, twins, reference: str | None, probe) -> dict[str, dict[str, np.ndarray]]:
    ModelSpace(path).write_probe(probe)
    pre = {"imagenet": {"preset": "imagenet", "input_size": [32, 32]}, "bgr255": BGR_RAW}
    for name, model in twins.items():
        onnxattr.add(path, model, name=name, preprocessing=pre[name], reference=reference,
                     methods=["saliency", "grad_input", "elrp"], storage=EXACT, batch_size=4)
    with read_space(path) as r:
        return {m: {n: r.maps(n, m) for n in r.names()} for m in ("saliency", "grad_input", "elrp")}


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("reference", ["gray", "black"])
def test_a_common_reference_makes_maps_independent_of_preprocessing(tmp_path, twins, reference):
    probe = random_probe(n=6, size=32)
    maps = _space(tmp_path / "s.h5", twins, reference, probe)
    for method in ("saliency", "grad_input", "elrp"):
        cos = _cosines(maps[method]["imagenet"], maps[method]["bgr255"])
        assert cos.min() > 0.9999, (method, cos)
    with read_space(tmp_path / "s.h5") as r:  # recorded with the maps
        recorded = json.loads(r.attrs("bgr255")["methods"])
    assert {m: p.get("reference") for m, p in recorded.items()} == {
        "saliency": None, "grad_input": reference, "elrp": reference}


def test_the_models_own_zero_makes_them_differ(tmp_path, twins):
    """The behaviour the reference fixes: ImageNet's zero is mid-gray, BGR 0-255's is black."""
    maps = _space(tmp_path / "s.h5", twins, "model", random_probe(n=6, size=32))
    assert _cosines(maps["saliency"]["imagenet"], maps["saliency"]["bgr255"]).min() > 0.9999
    for method in ("grad_input", "elrp"):
        assert _cosines(maps[method]["imagenet"], maps[method]["bgr255"]).mean() < 0.99, method


def test_gray_reference_is_gradient_times_input_from_gray_in_pixels(tmp_path, twins):
    """grad_input with reference gray = Σ_c (p − 127.5)·∂R̄/∂p over probe pixels p (no resize)."""
    probe = random_probe(n=3, size=32)
    maps = _space(tmp_path / "s.h5", {"imagenet": twins["imagenet"]}, "gray", probe)
    torch.manual_seed(0)
    net = randomize_bn(TinyResNet())
    p = torch.from_numpy(probe.images).permute(0, 3, 1, 2).float().requires_grad_(True)
    x = (p / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    net(x).mean(1).sum().backward()  # no encoder node: the encoder is the whole net
    expected = ((p - 127.5) * p.grad).sum(1).detach().numpy()
    np.testing.assert_allclose(maps["grad_input"]["imagenet"], expected, rtol=1e-4,
                               atol=1e-5 * np.abs(expected).max())


def test_maps_of_different_references_do_not_compare(tmp_path, twins):
    path = tmp_path / "s.h5"
    ModelSpace(path).write_probe(random_probe(n=4, size=32))
    onnxattr.add(path, twins["imagenet"], name="a", preprocessing={"preset": "imagenet"},
                 reference="gray", methods=["grad_input", "saliency"])
    onnxattr.add(path, twins["bgr255"], name="b", preprocessing=BGR_RAW, reference="model",
                 methods=["grad_input", "saliency"])
    with pytest.raises(OnnxAttrError, match=r"reference gray: a; reference model: b.*--reference"):
        onnxattr.affinity(path, "grad_input")
    assert onnxattr.affinity(path, "saliency").names == ["a", "b"]  # saliency takes no reference


def test_a_model_added_to_a_space_follows_its_reference(tmp_path, twins):
    """A space whose maps measure from the model's zero (as every space made before the default
    became gray): a model added without a reference measures from there too, and says so."""
    path = tmp_path / "s.h5"
    ModelSpace(path).write_probe(random_probe(n=4, size=32))
    onnxattr.add(path, twins["imagenet"], name="old", preprocessing={"preset": "imagenet"},
                 reference="model", methods=["grad_input", "elrp"])
    lines: list[str] = []
    onnxattr.add(path, twins["bgr255"], name="new", preprocessing=BGR_RAW,
                 methods=["grad_input", "elrp", "saliency"], log=lines.append)
    with read_space(path) as r:
        assert r.map_reference("new", "grad_input") == r.map_reference("new", "elrp") == "model"
        assert r.map_reference("new", "saliency") is None
    assert any("grad_input (input from model), elrp (input from model), saliency" in x
               for x in lines), lines
    assert onnxattr.affinity(path, "elrp").names == ["new", "old"]
    # a fresh space: the default, gray
    fresh = tmp_path / "fresh.h5"
    ModelSpace(fresh).write_probe(random_probe(n=4, size=32))
    onnxattr.add(fresh, twins["bgr255"], name="new", preprocessing=BGR_RAW, methods=["elrp"])
    with read_space(fresh) as r:
        assert r.map_reference("new", "elrp") == "gray"


def test_unknown_reference_names_the_choices():
    with pytest.raises(OnnxAttrError, match="reference 'grey' is not one of model, gray, black"):
        onnxattr.attribution.get_method("elrp", reference="grey")
    with pytest.raises(OnnxAttrError, match="takes no parameter reference"):
        onnxattr.attribution.get_method("saliency", reference="gray")


@pytest.mark.parametrize("spec", [
    {"preset": "imagenet"}, {"preset": "caffe", "layout": "nhwc"}, {"preset": "minus1to1"},
    {"color": "gray", "scale": 1 / 255, "mean": [0.5], "std": [0.5], "input_size": [20, 24]},
])
def test_constant_input_is_the_preprocessed_uniform_image(spec):
    pre = Preprocessing.from_dict({**spec, **({} if "input_size" in spec else {"input_size": [16, 16]})})
    for pixel in (0.0, 127.5, 255.0):
        image = np.full((1, 8, 8, 3), pixel, np.float32)
        expected = pre.apply(image)
        got = pre.constant_input(pixel).expand_as(expected)
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-5)


def test_cli_add_takes_a_reference(tmp_path, twins):
    from typer.testing import CliRunner

    from onnxattr.cli import app

    path = tmp_path / "s.h5"
    ModelSpace(path).write_probe(random_probe(n=3, size=32))
    args = ["add", str(twins["imagenet"]), "--space", str(path), "--preset", "imagenet",
            "--methods", "elrp"]
    r = CliRunner().invoke(app, [*args, "--reference", "black"])
    assert r.exit_code == 0, r.output
    assert "elrp (input from black)" in r.output
    with read_space(path) as reader:
        assert reader.map_reference("imagenet", "elrp") == "black"
    r = CliRunner().invoke(app, [*args, "--name", "x", "--reference", "grey"])
    assert r.exit_code == 1
    assert r.output.strip().splitlines() == [
        "error: elrp: reference 'grey' is not one of model, gray, black"]


@pytest.mark.parametrize("interface", ["caffe (bgr)", "unit", "minus1to1"])
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_interface_worlds_preamble_keeps_the_function_of_the_pixels(tmp_path, twins, interface,
                                                                    layout):
    """benchmarks/interface_worlds.py: the re-interfaced graph on T_new(p) equals the original
    on T_old(p) (onnxruntime), so the world's measured transfers still hold for it."""
    import sys
    from pathlib import Path

    import onnx
    import onnxruntime as ort

    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root / "benchmarks"))
    try:
        import interface_worlds as IW
    finally:
        sys.path.remove(str(root / "benchmarks"))
    src = twins["imagenet"]
    old = Preprocessing.from_preset("imagenet", input_size=(32, 32))
    if layout == "nhwc":  # the same net behind an NHWC input (a Keras-style export)
        model = onnx.load(str(src))
        g = model.graph
        inp = g.input[0]
        g.node.insert(0, onnx.helper.make_node("Transpose", ["nhwc_in"], [inp.name], perm=[0, 3, 1, 2]))
        new_in = onnx.helper.make_tensor_value_info("nhwc_in", onnx.TensorProto.FLOAT,
                                                    ["batch", 32, 32, 3])
        g.input.remove(inp)
        g.input.insert(0, new_in)
        src = tmp_path / "nhwc.onnx"
        onnx.save(model, str(src))
        old = Preprocessing.from_preset("imagenet", input_size=(32, 32), layout="nhwc")
    new = Preprocessing.from_dict({**old.to_dict(), **IW.INTERFACES[interface], "preset": None})
    dst = tmp_path / "re.onnx"
    IW.reinterface(src, dst, old, new)
    images = random_probe(n=3, size=32).images

    def run(path, pre):
        s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return s.run(None, {s.get_inputs()[0].name: pre.apply(images).numpy()})[0]

    np.testing.assert_allclose(run(dst, new), run(src, old), rtol=1e-4, atol=1e-5)
    assert not np.allclose(run(src, new), run(src, old), atol=1e-3)  # the interface did change
