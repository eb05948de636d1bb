"""Whole networks: `lrp` on the ONNX export against Zennit on the torch original, same rules.

VGG-style nets must agree exactly (up to float32 rounding); ResNet-style nets after Zennit's
canonizers (BN merged, residual sums as Sum modules) per image with cosine ≥ 0.999. Zennit's
MergeBatchNorm leaves BN as x/√(1+eps), so its copy gets eps moved into running_var first.
"""

from __future__ import annotations

import copy
import functools
import io
import warnings

import numpy as np
import onnx
import pytest
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from zennit.attribution import Gradient
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import EpsilonAlpha2Beta1Flat, EpsilonPlusFlat, LayerMapComposite
from zennit.rules import Epsilon, Norm, Pass
from zennit.torchvision import ResNetCanonizer
from zennit.types import Activation, AvgPool, Convolution

from onnxattr.attribution import attribute, get_method
from onnxattr.attribution import lrp as _lrp  # noqa: F401  (registers `lrp`)
from onnxattr.attribution.fast import MIN_COSINE, optimize, per_image_cosine
from onnxattr.onnxgraph.convert import TorchNet, to_torch

warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")


def export(model: nn.Module, x: torch.Tensor, keep_bn: bool = False) -> onnx.ModelProto:
    """Legacy exporter, opset 17; `keep_bn` keeps BatchNormalization nodes (no constant folding)."""
    f = io.BytesIO()
    torch.onnx.export(
        model,
        x[:1],
        f,
        dynamo=False,
        opset_version=17,
        do_constant_folding=not keep_bn,
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
    )
    return onnx.load_from_string(f.getvalue())


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.1)
    return model.eval()


def zennit_copy(model: nn.Module) -> nn.Module:
    """The original with BN eps moved into running_var, so that merged BN is exactly identity."""
    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.add_(m.eps)
            m.eps = 0.0
    return model


def zennit_relevance(model: nn.Module, composite, x: torch.Tensor) -> torch.Tensor:
    """Zennit's relevance for R̄ = mean(y): initial relevance y_j / N."""
    with Gradient(model=model, composite=composite) as attributor:
        _, rel = attributor(x, lambda y: y.detach() / y[0].numel())
    return rel


def lrp(model: onnx.ModelProto, x: torch.Tensor, **params) -> torch.Tensor:
    return attribute(to_torch(model), x, [get_method("lrp", **params)])["lrp"]


def epsilon_composite(eps: float, canonizers=None) -> LayerMapComposite:
    """Zennit's rules of the `epsilon` preset: ε on linear ops, Norm on pooling and sums."""
    from zennit.layer import Sum

    return LayerMapComposite(
        [
            (Activation, Pass()),
            (Sum, Norm()),
            (AvgPool, Norm()),
            (Convolution, Epsilon(eps)),
            (nn.Linear, Epsilon(eps)),
        ],
        canonizers=canonizers,
    )


class VGGish(nn.Module):
    def __init__(self, bn: bool = False) -> None:
        super().__init__()
        norm = (lambda c: nn.BatchNorm2d(c)) if bn else (lambda c: nn.Identity())
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            norm(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 12, 3, padding=1),
            norm(12),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Conv2d(12, 16, 3, padding=1),
            norm(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(16 * 4 * 4, 32),
            nn.ReLU(),
            nn.Linear(32, 10),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


PRESET_COMPOSITES = {
    "epsilon": lambda c: epsilon_composite(1e-4, c),
    "epsilon_plus_flat": lambda c: EpsilonPlusFlat(canonizers=c),
    "epsilon_alpha2_beta1_flat": lambda c: EpsilonAlpha2Beta1Flat(canonizers=c),
}


@functools.cache
def vgg_case(bn: bool) -> tuple[nn.Module, TorchNet, torch.Tensor]:
    """The net, its converted ONNX export and an input (exported once per module)."""
    torch.manual_seed(0)
    net = randomize_bn(VGGish(bn=bn))
    x = torch.randn(3, 3, 32, 32)
    return net, to_torch(export(net, x, keep_bn=bn)), x


@functools.cache
def resnet_case(block: type) -> tuple[nn.Module, TorchNet, torch.Tensor]:
    torch.manual_seed(0)
    net = ResNet(block, [1, 1, 1, 1])
    net.fc = nn.Identity()  # encoder: the pooled features
    randomize_bn(net)
    x = torch.randn(2, 3, 32, 32)
    return net, to_torch(export(net, x, keep_bn=True)), x


@pytest.mark.parametrize("preset", list(PRESET_COMPOSITES))
@pytest.mark.parametrize("bn", [False, True])
def test_vgg_matches_zennit(preset: str, bn: bool) -> None:
    net, graph, x = vgg_case(bn)
    got = attribute(graph, x, [get_method("lrp", preset=preset)])["lrp"]
    canonizers = [SequentialMergeBatchNorm()] if bn else None
    want = zennit_relevance(zennit_copy(net), PRESET_COMPOSITES[preset](canonizers), x)
    scale = want.abs().amax((1, 2, 3), keepdim=True)
    assert float(((got - want).abs() / scale).max()) < 1e-4


@pytest.mark.parametrize("block", [BasicBlock, Bottleneck])
@pytest.mark.parametrize("preset", ["epsilon_plus_flat", "epsilon_alpha2_beta1_flat", "epsilon"])
def test_resnet_matches_zennit_after_canonizers(block: type, preset: str) -> None:
    net, graph, x = resnet_case(block)
    got = attribute(graph, x, [get_method("lrp", preset=preset)])["lrp"]
    want = zennit_relevance(zennit_copy(net), PRESET_COMPOSITES[preset]([ResNetCanonizer()]), x)
    cos = torch.nn.functional.cosine_similarity(got.flatten(1), want.flatten(1))
    assert float(cos.min()) >= 0.999


@pytest.mark.parametrize("case", ["vgg", "vgg_bn", "resnet_basic", "resnet_bottleneck"])
def test_epsilon_lrp_sharing_the_forward_matches_zennit_and_lrp_alone(case: str) -> None:
    """lrp ε as one more backward pass over the forward of saliency, grad_input and elrp: Zennit's
    relevance, and lrp alone's maps (bit for bit once BN is folded; up to rounding before, as
    alone lrp merges Conv+BN and shared evaluates them apart)."""
    if case.startswith("vgg"):
        net, graph, x = vgg_case(case == "vgg_bn")
        canonizers = [SequentialMergeBatchNorm()] if case == "vgg_bn" else None
    else:
        net, graph, x = resnet_case(BasicBlock if case == "resnet_basic" else Bottleneck)
        canonizers = [ResNetCanonizer()]
    methods = [get_method(m) for m in ("saliency", "grad_input", "elrp", "lrp")]
    shared = attribute(graph, x, methods)["lrp"]
    alone = attribute(graph, x, methods[3:])["lrp"]
    want = zennit_relevance(zennit_copy(net), PRESET_COMPOSITES["epsilon"](canonizers), x)
    assert float(per_image_cosine(shared, want).min()) >= 0.999
    assert float(per_image_cosine(shared, alone).min()) >= MIN_COSINE
    folded, _ = optimize(graph)
    assert torch.equal(attribute(folded, x, methods)["lrp"], attribute(folded, x, methods[3:])["lrp"])


def test_conservation_without_biases() -> None:
    """ε → 0, no biases: the input relevance sums to R̄ = mean(y) per image (ReLU, max- and
    average pooling, a residual Add, Gemm)."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
            self.c2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
            self.fc = nn.Linear(8, 6, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a = torch.max_pool2d(torch.relu(self.c1(x)), 2)
            h = torch.relu(self.c2(a) + a)
            return torch.relu(self.fc(h.mean((2, 3))))

    torch.manual_seed(0)
    net = Net().eval()
    x = torch.rand(4, 3, 16, 16)
    model = export(net, x)
    r_bar = net(x).flatten(1).mean(1)
    for preset in ("epsilon", "epsilon_plus_flat"):
        rel = lrp(model, x, preset=preset, epsilon=1e-12)
        torch.testing.assert_close(rel.sum((1, 2, 3)), r_bar, rtol=1e-4, atol=1e-7)


def test_epsilon_preset_equals_deepexplain_elrp_on_relu_net() -> None:
    """On a ReLU net with a ReLU output, rule-based ε-LRP and the paper's gradient trick coincide."""
    torch.manual_seed(1)
    net = VGGish().eval()
    x = torch.randn(2, 3, 32, 32)
    graph = to_torch(export(net, x))
    maps = attribute(graph, x, [get_method("lrp", epsilon=1e-7), get_method("elrp", epsilon=1e-7)])
    scale = float(maps["elrp"].abs().max())
    torch.testing.assert_close(maps["lrp"], maps["elrp"], rtol=1e-3, atol=1e-3 * scale)


def test_graph_is_restored_and_forward_unchanged() -> None:
    torch.manual_seed(0)
    net = randomize_bn(VGGish(bn=True))
    x = torch.randn(2, 3, 32, 32)
    graph = to_torch(export(net, x, keep_bn=True))
    before = dict(graph.module.named_children())
    y0 = graph(x)
    method = get_method("lrp", preset="epsilon_plus_flat")
    outputs: list[torch.Tensor] = []
    maps = attribute(graph, x, [method, get_method("grad_input")], on_output=outputs.append)
    assert set(maps) == {"lrp", "grad_input"}
    assert dict(graph.module.named_children()) == before
    torch.testing.assert_close(graph(x), y0)
    with method.backward_context(graph):
        torch.testing.assert_close(graph(x), y0, rtol=1e-5, atol=1e-6)  # BN merged: same values
    assert np.isfinite(maps["lrp"].numpy()).all()


@functools.cache
def vit_and_mobilenet_v3() -> list[tuple[TorchNet, torch.Tensor]]:
    """A one-layer ViT and MobileNetV3-small (random weights), exported, fixed up as `add` does,
    converted."""
    from torchvision.models import mobilenet_v3_small
    from torchvision.models.vision_transformer import VisionTransformer

    from onnxattr.onnxgraph.fixups import fix_up

    torch.manual_seed(0)
    vit = VisionTransformer(
        image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32
    )
    mnv3 = mobilenet_v3_small()
    vit.heads, mnv3.classifier = nn.Identity(), nn.Identity()
    cases = []
    for net, size in ((vit, 32), (randomize_bn(mnv3), 64)):
        x = torch.randn(2, 3, size, size)
        model, _ = fix_up(export(net.eval(), x), list(x.shape))
        cases.append((to_torch(model), x))
    return cases


@pytest.mark.parametrize("preset", ["epsilon", "epsilon_plus_flat", "alpha2_beta1"])
def test_exported_vit_and_mobilenet_v3_run(preset: str) -> None:
    """Attention (Softmax as constant, MatMul of two activations), LayerNormalization, GELU as
    Erf, squeeze-excitation with HardSigmoid gates and HardSwish: every op has a rule, maps are
    finite and not constant."""
    for graph, x in vit_and_mobilenet_v3():
        rel = attribute(graph, x, [get_method("lrp", preset=preset)])["lrp"]
        assert torch.isfinite(rel).all()
        assert float(rel.flatten(1).std(1).min()) > 0
