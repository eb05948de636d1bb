"""The fast execution path (BN folded, channels-last): maps equal the exact path's for every method,
the fallback is taken and reported when they do not, and `exact` runs the unmodified net."""

from __future__ import annotations

import contextlib
import copy
import json

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from onnxattr.attribution import attribute, get_method
from onnxattr.attribution import fast as fast_mod
from onnxattr.attribution.fast import MIN_COSINE, choose_path, optimize, per_image_cosine
from onnxattr.attribution.patching import swapped
from onnxattr.onnxgraph import graph as onnx_graph
from onnxattr.onnxgraph.convert import to_torch
from onnxattr.pipeline import add_model
from onnxattr.space import ModelSpace

from .conftest import random_probe
from .models import export, randomize_bn

METHODS = [("saliency", {}), ("grad_input", {}), ("elrp", {}), ("lrp", {"preset": "epsilon"}),
           ("lrp", {"preset": "epsilon_plus_flat"}),
           ("lrp", {"preset": "epsilon_alpha2_beta1_flat"})]


class BNNet(nn.Module):
    """Conv+BN stem, a residual block, a depthwise Conv+BN, a BN after a ReLU (not foldable), a
    ConvTranspose+BN; `nhwc`: the input comes channels-last and is transposed inside the graph."""

    def __init__(self, nhwc: bool = False) -> None:
        super().__init__()
        self.nhwc = nhwc
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.c1, self.b1 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.dw, self.bdw = nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8)
        self.after_relu = nn.BatchNorm2d(8)
        self.up, self.bup = nn.ConvTranspose2d(8, 4, 2, stride=2), nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.nhwc:
            x = x.permute(0, 3, 1, 2)
        x = self.stem(x)
        x = torch.relu(self.b1(self.c1(x)) + x)
        x = self.after_relu(torch.relu(self.bdw(self.dw(x))))
        return torch.relu(self.bup(self.up(x)))


def converted(tmp_path, nhwc: bool):
    shape = (1, 16, 16, 3) if nhwc else (1, 3, 16, 16)
    model = randomize_bn(BNNet(nhwc), seed=1)
    path = export(model, tmp_path / "bn.onnx", shape, keep_bn=True)
    return model, to_torch(onnx_graph.load(path)), shape


@pytest.mark.parametrize("nhwc", [False, True])
def test_fast_maps_equal_exact_for_every_method(tmp_path, nhwc):
    model, net, shape = converted(tmp_path, nhwc)
    fast, done = optimize(net)
    assert done[0] == "4 BatchNormalization folded into Conv/Gemm"  # not the one after a ReLU
    assert sum(net.op_type(t) == "BatchNormalization" for t in fast.onnx_nodes) == 1
    x = torch.randn(3, *shape[1:], generator=torch.Generator().manual_seed(0))
    for name, params in METHODS:
        m = [get_method(name, **params)]
        exact, got = attribute(net, x, m)[name], attribute(fast, x, m)[name]
        assert got.shape == x.shape
        assert per_image_cosine(exact, got).min() >= MIN_COSINE, (name, params)
    # independent reference: eager autograd on the torch original
    xi = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(xi).flatten(1).mean(1).sum(), xi)
    got = attribute(fast, x, [get_method("grad_input")])["grad_input"]
    assert per_image_cosine(xi.detach() * g, got).min() >= MIN_COSINE
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.module.modules())  # net untouched


def padded_convs(opset: int):
    """Pad (zeros after H and W, as TF's SAME padding before a strided conv) -> Conv stride 2 ->
    Relu -> Pad (before and after) -> Conv; opset 10 keeps the pads as an attribute (onnx2torch's
    static Pad), 13 as an input (its dynamic Pad)."""
    from onnx import helper

    from .onnx_builders import init, make_model

    rng = np.random.default_rng(5)
    pads = {"p1": [0, 0, 0, 0, 0, 0, 1, 1], "p2": [0, 0, 1, 2, 0, 0, 2, 1]}

    def pad(x: str, y: str, p: str):
        if opset < 11:
            return helper.make_node("Pad", [x], [y], pads=pads[p])
        return helper.make_node("Pad", [x, p], [y])

    nodes = [pad("x", "a", "p1"), helper.make_node("Conv", ["a", "w1", "b1"], ["c"], strides=[2, 2]),
             helper.make_node("Relu", ["c"], ["r"]), pad("r", "d", "p2"),
             helper.make_node("Conv", ["d", "w2"], ["y"])]
    inits = [init("w1", rng.normal(size=(6, 3, 3, 3)).astype(np.float32)),
             init("b1", rng.normal(size=6).astype(np.float32)),
             init("w2", rng.normal(size=(4, 6, 3, 3)).astype(np.float32))]
    if opset >= 11:
        inits += [init(k, np.array(v, dtype=np.int64)) for k, v in pads.items()]
    return make_model(nodes, [("x", ["N", 3, 16, 16])], ["y"], inits, opset=opset)


@pytest.mark.parametrize("opset", [10, 13])
def test_pad_gradients_as_views_keep_every_map(opset):
    """The fast path's Pads give their gradient as a view of the incoming one: maps torch.equal
    to the converted Pads' on the same rewritten net, and close to the exact path's."""
    net = to_torch(padded_convs(opset))
    fast, done = optimize(net)
    assert done == ["channels-last memory", "2 Pad gradients as views"]
    plain = copy.deepcopy(fast.module)
    for name, m in list(plain.named_modules()):
        if isinstance(m, fast_mod.ConstantPad):
            parent, _, attr = name.rpartition(".")
            setattr(plain.get_submodule(parent) if parent else plain, attr, m.inner)
    plain = type(fast)(module=plain, onnx_nodes=fast.onnx_nodes)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    for name, params in METHODS:
        m = [get_method(name, **params)]
        got = attribute(fast, x, m)[name]
        assert torch.equal(got, attribute(plain, x, m)[name]), (name, params)
        assert per_image_cosine(got, attribute(net, x, m)[name]).min() >= MIN_COSINE, (name, params)
    pad = next(m for m in fast.module.modules() if isinstance(m, fast_mod.ConstantPad))
    xi = torch.randn(2, 3, 16, 16, requires_grad=True)
    rest = () if opset < 11 else (torch.tensor([0, 0, 0, 0, 0, 0, 1, 1]),)
    y = pad(xi, *rest)
    (g,) = torch.autograd.grad(y, xi, torch.randn_like(y))
    assert g._base is not None and not g.is_contiguous()  # a view, not a copy


def test_fallback_when_the_rewrite_breaks_equality_or_fails(tmp_path):
    _, net, shape = converted(tmp_path, False)
    x = torch.randn(2, *shape[1:])
    methods = [get_method("grad_input"), get_method("elrp")]
    exact = attribute(net, x, methods)

    def broken(n):
        fast, done = optimize(n)
        conv = next(m for m in fast.module.modules() if isinstance(m, nn.Conv2d))
        conv.weight.data.mul_(-1.0)
        return fast, done

    path = choose_path(net, x, methods, exact, rewrite=broken)
    assert path.path == "exact" and path.net is net and "fell back" in path.reason
    assert min(path.min_cosine.values()) < MIN_COSINE
    path = choose_path(net, x, methods, exact, rewrite=lambda n: 1 / 0)
    assert path.path == "exact" and "ZeroDivisionError" in path.reason
    path = choose_path(net, x, methods, exact)
    assert path.path == "fast" and path.net is not net
    assert min(path.min_cosine.values()) >= MIN_COSINE


def stored_execution(space, name: str) -> dict:
    with h5py.File(space) as f:
        return json.loads(f[f"models/{name}"].attrs["execution"])


def test_add_uses_fast_path_reports_fallback_and_exact(tmp_path, monkeypatch):
    path = export(randomize_bn(BNNet(), seed=1), tmp_path / "bn.onnx", (1, 3, 16, 16), keep_bn=True)
    space = tmp_path / "s.h5"
    ModelSpace(space).write_probe(random_probe(n=5, size=16))
    kw = dict(preprocessing={"preset": "imagenet"}, batch_size=2, progress=False,
              methods=["grad_input", "elrp"])
    logs: list[str] = []
    add_model(space, path, name="fast", log=logs.append, **kw)
    assert any(line.startswith("fast path (4 BatchNormalization folded") for line in logs)
    rec = stored_execution(space, "fast")
    assert rec["path"] == "fast" and min(rec["min_cosine"].values()) >= MIN_COSINE

    nets = []
    real_attribute = fast_mod.attribute

    def spy(net, x, methods, **kw):
        nets.append(net)
        return real_attribute(net, x, methods, **kw)

    monkeypatch.setattr("onnxattr.pipeline.attribute", spy)
    add_model(space, path, name="exact", fast=False, **kw)
    assert stored_execution(space, "exact")["path"] == "exact"
    assert nets and all(any(isinstance(m, nn.BatchNorm2d) for m in n.module.modules()) for n in nets)
    s = ModelSpace(space)
    for m in ("grad_input", "elrp"):
        a, b = s.read_maps("fast", m), s.read_maps("exact", m)
        cos = (a * b).reshape(5, -1).sum(1) / (np.linalg.norm(a.reshape(5, -1), axis=1)
                                               * np.linalg.norm(b.reshape(5, -1), axis=1))
        assert cos.min() >= 0.999  # float16 storage

    def broken(n):
        fast, done = optimize(n)
        next(m for m in fast.module.modules() if isinstance(m, nn.Conv2d)).weight.data.mul_(-1.0)
        return fast, done

    monkeypatch.setattr(fast_mod, "optimize", broken)
    logs.clear()
    add_model(space, path, name="fallback", log=logs.append, **kw)
    assert any(line.startswith("exact path: the fast path's maps differ") for line in logs)
    rec = stored_execution(space, "fallback")
    assert rec["path"] == "exact" and "fell back" in rec["reason"]


@pytest.mark.parametrize("slower", ["fast", "exact"])
def test_add_keeps_the_faster_path(tmp_path, monkeypatch, slower):
    """After the fast path's maps are verified, the next two batches run one on each path, timed,
    and the faster path runs the rest. The clock is faked: a batch on the slower path takes 1 s,
    on the other 0.25 s."""
    path = export(randomize_bn(BNNet(), seed=1), tmp_path / "bn.onnx", (1, 3, 16, 16), keep_bn=True)
    space = tmp_path / "s.h5"
    ModelSpace(space).write_probe(random_probe(n=9, size=16))
    calls: list[tuple[str, int]] = []
    nets: list = []  # the first net attributed is the exact one
    clock = [0.0]
    real_attribute = fast_mod.attribute

    def slowed(net, x, methods, **kw):
        nets.append(net)
        calls.append(("exact" if net is nets[0] else "fast", len(x)))
        clock[0] += 1.0 if calls[-1][0] == slower else 0.25
        return real_attribute(net, x, methods, **kw)

    monkeypatch.setattr("onnxattr.pipeline.path_clock", lambda device: clock[0])
    monkeypatch.setattr("onnxattr.pipeline.attribute", slowed)
    monkeypatch.setattr(fast_mod, "attribute", slowed)
    logs: list[str] = []
    add_model(space, path, name="m", log=logs.append, preprocessing={"preset": "imagenet"},
              batch_size=3, progress=False, methods=["grad_input", "lrp"])
    kept = "exact" if slower == "fast" else "fast"
    # first batch exact, its check on the fast path, a timed batch on each, the rest on the kept path
    assert calls == [("exact", 2), ("fast", 2), ("exact", 2), ("fast", 2), (kept, 3)]
    rec = stored_execution(space, "m")
    assert rec["path"] == kept and rec["seconds"] == {slower: 1.0, kept: 0.25}
    assert rec["clock"] == "CPU time"
    if kept == "exact":
        assert "maps equal the exact path's but it is slower" in rec["reason"]
        assert any(line.startswith("exact path: the fast path's maps equal") for line in logs)
    else:
        assert rec["reason"].startswith("faster: ")
        assert any(line.startswith("fast path (") and "faster: " in line for line in logs)
    assert min(rec["min_cosine"].values()) >= MIN_COSINE


def test_keep_faster_takes_each_paths_smaller_time():
    """A spike in one timed batch does not decide alone: each path's time is the smaller of its
    timed batch and its first batch (the exact path's first, the fast path's check)."""
    exact, fast = object(), object()
    path = fast_mod.ExecutionPath(fast, "fast", ["r"], {"m": 1.0}, check_seconds=0.1)
    times = {exact: 0.2, fast: 9.0}  # the fast path's timed batch spiked
    kept = fast_mod.keep_faster(path, exact, times.__getitem__, 2, exact_first=0.3)
    assert kept.path == "fast" and kept.net is fast and kept.seconds == {"exact": 0.2, "fast": 0.1}
    kept = fast_mod.keep_faster(path, exact, {exact: 0.2, fast: 9.0}.__getitem__, 2, exact_first=0.05)
    assert kept.path == "exact" and kept.net is exact and kept.seconds == {"exact": 0.05, "fast": 0.1}


def test_cli_exact_and_fast(tmp_path):
    from typer.testing import CliRunner

    from onnxattr.cli import app

    path = export(randomize_bn(BNNet(), seed=1), tmp_path / "bn.onnx", (1, 3, 16, 16), keep_bn=True)
    space = tmp_path / "s.h5"
    ModelSpace(space).write_probe(random_probe(n=3, size=16))
    common = ["add", str(path), "--space", str(space), "--preset", "imagenet", "--batch-size", "2",
              "--methods", "grad_input"]
    r = CliRunner().invoke(app, [*common, "--name", "e", "--exact"])
    assert r.exit_code == 0, r.output
    assert "exact path: asked for (--exact, fast=False)" in r.output
    assert stored_execution(space, "e")["path"] == "exact"
    r = CliRunner().invoke(app, [*common, "--name", "f"])
    assert r.exit_code == 0, r.output
    assert "fast path (" in r.output and stored_execution(space, "f")["path"] == "fast"


def forward_counter(net) -> list[int]:
    calls: list[int] = []
    net.module.register_forward_pre_hook(lambda *_: calls.append(1))
    return calls


@pytest.mark.parametrize("rewritten", [False, True])
def test_gradient_modes_elrp_and_lrp_epsilon_share_one_forward_with_equal_maps(tmp_path, rewritten):
    """saliency and grad_input from one gradient, elrp's and lrp ε's backward passes over the same
    forward. Maps equal those of a pass per mode and of each method alone; lrp ε on the exact net
    up to float rounding (alone it merges Conv+BN, shared it evaluates them apart)."""
    _, net, shape = converted(tmp_path, False)
    if rewritten:
        net, _ = optimize(net)
    x = torch.randn(3, *shape[1:], generator=torch.Generator().manual_seed(2))
    methods = [get_method(n, **p) for n, p in METHODS[:4]]
    calls = forward_counter(net)
    outputs: list[torch.Tensor] = []
    shared = attribute(net, x, methods, on_output=outputs.append)
    assert len(calls) == 1 and len(outputs) == 1
    separate = attribute(net, x, methods, share_forward=False)
    assert len(calls) == 1 + 3  # a pass per mode: gradient, elrp, lrp
    assert torch.equal(outputs[0], net(x))
    for m in methods:
        alone = attribute(net, x, [m])[m.name]
        assert torch.equal(separate[m.name], alone), m.name
        if m.name == "lrp" and not rewritten:
            assert not torch.equal(shared[m.name], alone)
            assert per_image_cosine(shared[m.name], alone).min() >= MIN_COSINE
        else:
            assert torch.equal(shared[m.name], alone), m.name


@pytest.mark.parametrize("preset", ["epsilon_plus_flat", "epsilon_alpha2_beta1_flat", "alpha2_beta1"])
def test_lrp_with_modified_weight_rules_keeps_its_own_forward(tmp_path, preset):
    _, net, shape = converted(tmp_path, False)
    net, _ = optimize(net)
    x = torch.randn(2, *shape[1:])
    methods = [get_method("grad_input"), get_method("elrp"), get_method("lrp", preset=preset)]
    calls = forward_counter(net)
    shared = attribute(net, x, methods)
    assert len(calls) == 2
    assert torch.equal(shared["lrp"], attribute(net, x, methods[2:])["lrp"])


def test_a_method_with_its_own_backward_context_keeps_its_own_pass(tmp_path):
    """A method that overrides `backward_context` without `backward_rules` may change the forward,
    so it never joins the shared one."""
    from onnxattr.attribution.methods import GradientInput

    class Clipped(GradientInput):
        name = "clipped"

        def mode(self):
            return "clipped"

        @contextlib.contextmanager
        def backward_context(self, net):
            relu = {t: nn.Sequential(m, nn.Hardtanh(0.0, 1e9)) for t, m in net.modules_of_type({"Relu"})}
            with swapped(net.module, relu):
                yield

    _, net, shape = converted(tmp_path, False)
    x = torch.randn(2, *shape[1:])
    calls = forward_counter(net)
    maps = attribute(net, x, [get_method("grad_input"), Clipped()])
    assert len(calls) == 2
    assert torch.equal(maps["clipped"], maps["grad_input"])  # relu then clip at 0: same gradient


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_elrp_ratio_in_one_buffer_equals_the_formula(dtype):
    from onnxattr.attribution.methods import _ratio

    z = torch.cat([torch.tensor([0.0, -0.0, 1e-30, -1e-30, -1e-4, 1e-4, float("nan")]),
                   torch.randn(1000)]).to(dtype)
    y, grad = torch.sigmoid(z), torch.randn_like(z)
    for eps in (1e-4, 1e-7, 0.25):
        want = grad * (y / (z + torch.where(z >= 0, eps, -eps)))
        torch.testing.assert_close(_ratio(z, y, grad, eps), want, rtol=0, atol=0, equal_nan=True)
