"""Stored maps equal independent references: autograd and Captum on the original torch module."""

from __future__ import annotations

import h5py
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from captum.attr import InputXGradient, Saliency
from torch import nn

from onnxattr.pipeline import add_model
from onnxattr.preprocess import Preprocessing
from onnxattr.space import MapStorage, ModelSpace

from .conftest import random_probe
from .models import TinyResNet, TinyVGG, export, randomize_bn

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
EXACT = MapStorage("float32")  # lossless: the tests that compare values to 1e-4


def reference_input(images: np.ndarray, size: int) -> torch.Tensor:
    """T by hand: bilinear (antialiased) resize, ImageNet normalisation, NCHW."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True).clamp(0, 255)
    return (x / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def to_probe(a: torch.Tensor, size: int) -> np.ndarray:
    a = a.sum(1, keepdim=True)
    if a.shape[-1] != size:
        a = F.interpolate(a, size=(size, size), mode="bilinear", antialias=True)
    return a[:, 0].detach().numpy()


def per_image_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


class MeanOutput(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1).mean(1, keepdim=True)


@pytest.mark.parametrize("arch", ["resnet", "vgg"])
@pytest.mark.parametrize("probe_size", [32, 48])
def test_maps_match_captum_and_autograd(tmp_path, arch, probe_size):
    torch.manual_seed(0)
    if arch == "resnet":
        net = randomize_bn(TinyResNet())
        encoder = _Fn(net.features)
        path = export(net, tmp_path / "m.onnx", (2, 3, 32, 32))
        # the encoder output is the last Relu, before the head (pooling + Gemm)
        node = [n for n in onnx.load(str(path)).graph.node if n.op_type == "Relu"][-1].name
    else:
        net = encoder = TinyVGG().eval()
        path = export(net, tmp_path / "m.onnx", (2, 3, 32, 32))
        node = None
    probe = random_probe(n=5, size=probe_size)
    space = tmp_path / "space.h5"
    ModelSpace(space).write_probe(probe)
    add_model(space, path, encoder_node=node, preprocessing={"preset": "imagenet"}, batch_size=2,
              progress=False, storage=EXACT)
    # Captum's InputXGradient measures x from the model's own zero
    add_model(space, path, encoder_node=node, name="zero", preprocessing={"preset": "imagenet"},
              method_params={"grad_input": {"reference": "model"}}, batch_size=2, progress=False,
              storage=EXACT)

    x = reference_input(probe.images, 32)
    wrapped = MeanOutput(encoder)
    target = dict(target=0)
    sal = Saliency(wrapped).attribute(x.clone().requires_grad_(), abs=True, **target)
    ixg = InputXGradient(wrapped).attribute(x.clone().requires_grad_(), **target)
    xa = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(encoder(xa).flatten(1).mean(1).sum(), xa)

    gray = (0.5 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    stored = ModelSpace(space)
    for name, method, ref in [("m", "saliency", sal), ("zero", "grad_input", ixg),
                              ("zero", "grad_input", x * g), ("m", "grad_input", (x - gray) * g)]:
        got = stored.read_maps(name, method)
        assert got.shape == (5, probe_size, probe_size)
        cos = per_image_cosine(got, to_probe(ref, probe_size))
        assert cos.min() >= 0.999, (method, cos)


class _Fn(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def test_elrp_equals_zennit_epsilon_on_relu_chain(tmp_path):
    from zennit.composites import LayerMapComposite
    from zennit.rules import Epsilon, Pass
    from zennit.types import Activation, Convolution, Linear

    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 3, stride=2), nn.ReLU(),
        nn.Flatten(), nn.Linear(4 * 15 * 15, 10), nn.ReLU(),
    ).eval()
    eps = 1e-2
    path = export(net, tmp_path / "chain.onnx", (2, 3, 32, 32))
    probe = random_probe(n=4, size=32)
    space = tmp_path / "s.h5"
    ModelSpace(space).write_probe(probe)
    add_model(space, path, preprocessing={"preset": "imagenet"}, methods=["elrp"],  # Zennit's x
              method_params={"elrp": {"epsilon": eps, "reference": "model"}}, progress=False,
              storage=EXACT)

    x = reference_input(probe.images, 32).requires_grad_()
    composite = LayerMapComposite(
        [(Activation, Pass()), (Convolution, Epsilon(epsilon=eps)), (Linear, Epsilon(epsilon=eps))]
    )
    with composite.context(net) as modified:
        out = modified(x)
        # R̄ = mean of the outputs: each unit's relevance is its share y_j / N
        (rel,) = torch.autograd.grad(out, x, grad_outputs=out.detach() / out[0].numel())
    got = ModelSpace(space).read_maps("chain", "elrp")
    ref = to_probe(rel, 32)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())


def test_elrp_tends_to_grad_input(tmp_path):
    net = randomize_bn(TinyResNet())
    path = export(net, tmp_path / "r.onnx", (1, 3, 32, 32))
    probe = random_probe(n=3)
    space = tmp_path / "s.h5"
    ModelSpace(space).write_probe(probe)
    gaps = []
    for eps in (1e-1, 1e-3, 1e-6):
        add_model(space, path, name=f"e{eps}", methods=["grad_input", "elrp"],
                  method_params={"elrp": {"epsilon": eps}}, progress=False, storage=EXACT)
        s = ModelSpace(space)
        gi, el = s.read_maps(f"e{eps}", "grad_input"), s.read_maps(f"e{eps}", "elrp")
        gaps.append(np.abs(el - gi).max() / np.abs(gi).max())
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-3, gaps


def test_space_layout_and_metadata(tmp_path, probe):
    path = export(TinyVGG(), tmp_path / "v.onnx", (1, 3, 32, 32))
    space = tmp_path / "s.h5"
    ModelSpace(space).write_probe(probe)
    add_model(space, path, preprocessing=Preprocessing.from_preset("imagenet", input_size=(32, 32)),
              progress=False)
    with h5py.File(space) as f:
        assert f.attrs["format"] == "onnxattr-space" and f.attrs["format_version"] == 3
        assert f["probe/images"].shape == (6, 32, 32, 3) and f["probe/images"].dtype == np.uint8
        g = f["models/v"]
        for m in ("saliency", "grad_input", "elrp"):
            assert g[f"maps/{m}"].shape == (6, 32, 32) and g[f"maps/{m}"].dtype == np.float16
            # whole images per chunk, ~128 KB: all 6 maps of 32x32 float16 in one
            assert g[f"maps/{m}"].chunks == (6, 32, 32) and g[f"map_scale/{m}"].shape == (6,)
        assert g["features"].shape == (6, 8 * 8 * 8)
        for key in ("onnx_sha256", "encoder_tensor", "preprocessing", "methods", "versions",
                    "created", "uid", "verify_rel_err"):
            assert key in g.attrs, key
        assert '"epsilon": 0.0001' in g.attrs["methods"]
    # features are the encoder outputs on the probe, pooled losslessly here (512 <= 8192 dims)
    x = Preprocessing.from_preset("imagenet", input_size=(32, 32)).apply(probe.images)
    (reference,) = ort.InferenceSession(str(path)).run(None, {"input": x.numpy()})
    # stored with 10 mantissa bits by default (MapStorage.feature_bits): relative error <= 2^-11
    np.testing.assert_allclose(ModelSpace(space).read_features("v"),
                               reference.reshape(6, -1), rtol=2.0**-10, atol=1e-5)


def test_graph_that_only_runs_one_image_at_a_time_is_attributed_singly(tmp_path, probe, monkeypatch):
    from onnxattr import encoder, pipeline
    from onnxattr.onnxgraph.fixups import SINGLE_IMAGE, Fix

    monkeypatch.setattr(encoder, "fix_up",
                        lambda m, shape: (m, [Fix(SINGLE_IMAGE, 1, "one image at a time", fixup="batch")]))
    batches = []
    real = pipeline.attribute

    def spy(graph, x, methods, **kw):
        batches.append(len(x))
        return real(graph, x, methods, **kw)

    monkeypatch.setattr(pipeline, "attribute", spy)
    path = export(TinyVGG(), tmp_path / "v.onnx", (1, 3, 32, 32))
    space = tmp_path / "s.h5"
    ModelSpace(space).write_probe(probe)
    add_model(space, path, batch_size=4, progress=False)
    assert batches == [1] * len(probe)


def test_torch_default_dynamo_export_lands_where_the_legacy_export_does(tmp_path, probe):
    """torch's current default exporter (opset >= 18, external data) through `add`, every method."""
    pytest.importorskip("onnxscript")
    net = randomize_bn(TinyResNet())
    x = torch.randn(1, 3, 32, 32)
    dynamo = tmp_path / "dynamo.onnx"
    torch.onnx.export(net, (x,), str(dynamo), dynamo=True, external_data=True)
    assert onnx.load(str(dynamo), load_external_data=False).opset_import[0].version >= 18
    legacy = export(net, tmp_path / "legacy.onnx", (1, 3, 32, 32))
    space = tmp_path / "s.h5"
    ModelSpace(space).write_probe(probe)
    methods = ["saliency", "grad_input", "elrp", "lrp"]
    for name, path in (("dynamo", dynamo), ("legacy", legacy)):
        add_model(space, path, name=name, methods=methods, progress=False, storage=EXACT)
    s = ModelSpace(space)
    for m in methods:
        a, b = s.read_maps("dynamo", m), s.read_maps("legacy", m)
        assert np.isfinite(a).all() and a.reshape(len(a), -1).std(1).min() > 0
        assert per_image_cosine(a, b).min() >= 0.999, m
