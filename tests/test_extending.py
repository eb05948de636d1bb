"""Every example of docs/extending.md, as written: registered, then used through the API and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper
from PIL import Image
from typer.testing import CliRunner

import onnxattr
from onnxattr.cli import app
from onnxattr.space import MapStorage, ModelSpace

from .models import TinyVGG, export
from .onnx_builders import init, make_model, rand

EXACT = MapStorage("float32")  # lossless: the maps are compared to references

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
runner = CliRunner()


def example(heading: str) -> dict:
    """Run the ```python block under ``## heading`` of docs/extending.md; return its namespace."""
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index(f"## {heading}\n") :]
    start = section.index("```python\n") + len("```python\n")
    namespace: dict = {}
    exec(compile(section[start : section.index("\n```", start)], str(DOC), "exec"), namespace)
    return namespace


def cli(*args) -> str:
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r.output


@pytest.fixture(autouse=True)
def registries():
    """Each test's registrations are undone afterwards (onnx2torch's converters excepted)."""
    import model_zoo._registry as zoo
    from onnxattr.analysis import estimators
    from onnxattr.attribution import METHODS, PRESETS, RULES
    from onnxattr.onnxgraph import fixups

    saved = [
        (d, dict(d))
        for d in (METHODS, PRESETS, RULES, estimators.ESTIMATORS, fixups.FIXUPS, zoo._REGISTRY)
    ]
    yield
    for d, copy in saved:
        d.clear()
        d.update(copy)


@pytest.fixture
def space(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(photos / f"{i}.png")
    path = tmp_path / "space.h5"
    onnxattr.build_probe(photos, size=32, space=path)
    return path


def test_attribution_method(tmp_path, space) -> None:
    example("An attribution method")
    torch.manual_seed(0)
    net = TinyVGG().eval()
    model = export(net, tmp_path / "vgg.onnx", (1, 3, 24, 24))
    onnxattr.add(
        space, model, name="api", preprocessing="imagenet", methods=["gradient"], storage=EXACT
    )
    cli(
        "add",
        model,
        "--space",
        space,
        "--name",
        "cli",
        "--preset",
        "imagenet",
        "--methods",
        "gradient",
        "--map-dtype",
        "float32",
    )
    s = ModelSpace(space)
    # independent reference: autograd on the original torch module, same preprocessing
    pre = onnxattr.Preprocessing.from_dict(
        json.loads(next(r.attrs["preprocessing"] for r in s.models() if r.name == "api"))
    )
    probe = s.read_probe()
    x = pre.apply(probe.images).requires_grad_(True)
    (grad,) = torch.autograd.grad(net(x).flatten(1).mean(1).sum(), x)
    expected = pre.invert_map(grad, probe.size).numpy()
    np.testing.assert_allclose(
        s.read_maps("api", "gradient"), expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max()
    )
    np.testing.assert_allclose(s.read_maps("cli", "gradient"), s.read_maps("api", "gradient"))
    assert "gradient" in onnxattr.estimators(space)


def test_lrp_preset(tmp_path, space) -> None:
    example("An LRP rule table (preset)")
    torch.manual_seed(1)
    model = export(TinyVGG(), tmp_path / "vgg.onnx", (1, 3, 24, 24))
    onnxattr.add(space, model, name="api", methods=["lrp"], lrp_preset="zplus_flat", storage=EXACT)
    cli(
        "add",
        model,
        "--space",
        space,
        "--name",
        "cli",
        "--methods",
        "lrp",
        "--lrp-preset",
        "zplus_flat",
        "--map-dtype",
        "float32",
    )
    # on a network of convolutions only, z⁺ everywhere equals Zennit-style EpsilonPlusFlat
    onnxattr.add(
        space, model, name="builtin", methods=["lrp"], lrp_preset="epsilon_plus_flat", storage=EXACT
    )
    s = ModelSpace(space)
    api, ref = s.read_maps("api", "lrp"), s.read_maps("builtin", "lrp")
    assert np.abs(api).max() > 0
    np.testing.assert_allclose(api, ref, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(s.read_maps("cli", "lrp"), api)
    assert "zplus_flat" in cli("rules", "--preset", "zplus_flat")


def test_lrp_rule(tmp_path, space) -> None:
    """The γ-rule of the example against Zennit's Gamma on the torch original (same rules
    elsewhere as the `epsilon` preset), then through the API and the CLI (TOML overrides)."""
    from zennit.composites import LayerMapComposite
    from zennit.layer import Sum
    from zennit.rules import Epsilon, Gamma, Norm, Pass
    from zennit.types import Activation, AvgPool, Convolution

    from onnxattr.attribution import attribute, get_method
    from onnxattr.onnxgraph.convert import to_torch

    from .test_lrp_networks import VGGish, zennit_relevance
    from .test_lrp_networks import export as export_proto

    example("An LRP rule")
    torch.manual_seed(3)
    net = VGGish().eval()
    x = torch.rand(3, 3, 32, 32)  # x >= 0: Zennit's generalised γ-rule is then the original one
    model = export_proto(net, x)
    gamma = {"rule": "gamma", "gamma": 0.25}
    rules = {"Conv": gamma, "first": gamma}  # every convolution, the first one included
    got = attribute(to_torch(model), x, [get_method("lrp", preset="epsilon", rules=rules)])["lrp"]
    composite = LayerMapComposite(
        [
            (Activation, Pass()),
            (Sum, Norm()),
            (AvgPool, Norm()),
            (Convolution, Gamma(0.25)),
            (torch.nn.Linear, Epsilon(1e-4)),
        ]
    )
    want = zennit_relevance(net, composite, x)
    scale = want.abs().amax((1, 2, 3), keepdim=True)
    assert float(want.abs().max()) > 0
    assert float(((got - want).abs() / scale).max()) < 1e-4
    # through the API and the CLI: the same maps
    path = tmp_path / "vgg.onnx"
    onnx.save(model, path)
    onnxattr.add(space, path, name="api", methods=["lrp"], lrp_rules=rules, storage=EXACT)
    toml = tmp_path / "rules.toml"
    toml.write_text('Conv = { rule = "gamma", gamma = 0.25 }\nfirst = { rule = "gamma" }\n')
    cli("add", path, "--space", space, "--name", "cli", "--methods", "lrp", "--lrp-rules", toml,
        "--map-dtype", "float32")
    s = ModelSpace(space)
    assert np.abs(s.read_maps("api", "lrp")).max() > 0
    np.testing.assert_allclose(s.read_maps("cli", "lrp"), s.read_maps("api", "lrp"))
    assert "gamma" in cli("rules", "--overrides", toml)


def test_estimator(tmp_path) -> None:
    from .space_factory import random_space
    from .test_estimators import direct_cka

    example("An estimator")
    path = tmp_path / "s.h5"
    data = random_space(path, n_models=3)
    aff = onnxattr.affinity(path, "powcka", power=3.0)
    for a in aff.names:
        for b in aff.names:
            fa, fb = (np.abs(data[k]["features"].astype(np.float64)) ** 3 for k in (a, b))
            assert aff.values[aff.index(a), aff.index(b)] == pytest.approx(
                direct_cka(fa, fb), abs=1e-6
            )
    assert "powcka" in onnxattr.estimators(path)
    cli("distance", "-s", path, "-m", "powcka", "--param", "power=3", "-o", tmp_path)
    from onnxattr.analysis.distances import read_matrix_csv

    np.testing.assert_allclose(
        read_matrix_csv(tmp_path / "powcka_affinity.csv").values, aff.values, atol=1e-6
    )
    assert "powcka" in cli("estimators")


def test_fixup_pass(tmp_path, space) -> None:
    example("A fix-up pass")
    from onnxattr.onnxgraph.fixups import list_fixups

    assert [p.name for p in list_fixups()].index("identity") == 4  # after reshape (40)
    N = helper.make_node
    nodes = [
        N("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        N("Identity", ["c"], ["i1"]),
        N("Relu", ["i1"], ["r"]),
        N("Identity", ["r"], ["i2"]),
        N("MaxPool", ["i2"], ["y"], kernel_shape=[2, 2], strides=[2, 2]),
    ]
    model = make_model(nodes, [("x", ["n", 3, 16, 16])], ["y"], [init("w", rand(4, 3, 3, 3))])
    path = tmp_path / "ident.onnx"
    onnx.save(model, path)
    result = onnxattr.add(space, path, name="api", methods=["saliency"], storage=EXACT)
    assert [(f.fixup, f.code, f.count) for f in result.fixups] == [
        ("identity", "identity-bypassed", 2)
    ]
    stored = json.loads(
        next(r.attrs["fixups"] for r in ModelSpace(space).models() if r.name == "api")
    )
    assert stored[0]["code"] == "identity-bypassed"
    out = cli(
        "add",
        path,
        "--space",
        space,
        "--name",
        "cli",
        "--methods",
        "saliency",
        "--map-dtype",
        "float32",
    )
    assert "fix-up: identity: 2 Identity bypassed" in out


def test_converter(tmp_path, space) -> None:
    example("An opset converter")
    N = helper.make_node
    nodes = [
        N("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        N("Shrink", ["c"], ["s"], lambd=0.2, bias=0.1),
        N("Relu", ["s"], ["y"]),
    ]
    model = make_model(nodes, [("x", ["n", 3, 16, 16])], ["y"], [init("w", rand(4, 3, 3, 3))])
    path = tmp_path / "shrink.onnx"
    onnx.save(model, path)
    # add verifies the converted graph against onnxruntime on probe images
    assert (
        onnxattr.add(space, path, name="api", methods=["grad_input"], storage=EXACT).verify_rel_err
        < 1e-5
    )
    out = cli(
        "add",
        path,
        "--space",
        space,
        "--name",
        "cli",
        "--methods",
        "grad_input",
        "--map-dtype",
        "float32",
    )
    assert "verified against onnxruntime" in out
    s = ModelSpace(space)
    np.testing.assert_allclose(s.read_maps("cli", "grad_input"), s.read_maps("api", "grad_input"))


def test_zoo_model(tmp_path, space) -> None:
    import model_zoo

    example("A zoo model")
    assert "tiny_cnn" in model_zoo.list_models()
    built = model_zoo.build_one("tiny_cnn", tmp_path / "cache")
    assert built.check["rel_err"] < 1e-5
    e = built.entry
    onnxattr.add(
        space,
        built.path,
        e.encoder_node,
        name="api",
        preprocessing=e.preprocessing,
        methods=["saliency"],
        storage=EXACT,
    )
    out = cli("zoo", "build", "tiny_cnn", "--cache", tmp_path / "cache2")
    assert "tiny_cnn" in out
    cli(
        "add",
        tmp_path / "cache2" / "tiny_cnn.onnx",
        "--space",
        space,
        "--name",
        "cli",
        "--encoder-node",
        e.encoder_node,
        "--preset",
        "unit",
        "--methods",
        "saliency",
        "--map-dtype",
        "float32",
    )
    s = ModelSpace(space)
    np.testing.assert_allclose(s.read_maps("cli", "saliency"), s.read_maps("api", "saliency"))


def test_cli_command(tmp_path, space, monkeypatch) -> None:
    """The example's `register`, found through the entry-point group as onnxattr.cli finds the
    zoo's, adds a command that reports what the API says and fails in one line."""
    import typer

    import onnxattr.cli as cli_mod

    register = example("A CLI command")["register"]

    class EntryPoint:
        name, value = "count", "my_package.cli:register"

        def load(self):
            return register

    target = typer.Typer()
    target.callback()(lambda: None)  # a group, as the onnxattr app
    monkeypatch.setattr(cli_mod, "app", target)
    monkeypatch.setattr(
        cli_mod,
        "entry_points",
        lambda group: [EntryPoint()] if group == cli_mod.PLUGIN_GROUP else [],
    )
    cli_mod._load_plugins()
    model = export(TinyVGG(), tmp_path / "vgg.onnx", (1, 3, 24, 24))
    onnxattr.add(space, model, name="m", preprocessing="imagenet", methods=["saliency"])
    r = runner.invoke(target, ["count", "--space", str(space)])
    assert r.exit_code == 0 and r.output == f"{len(onnxattr.models(space))} models in {space}\n"
    assert len(onnxattr.models(space)) == 1
    r = runner.invoke(target, ["count", "--space", str(tmp_path / "none.h5")])
    assert (
        r.exit_code == 1 and r.output.startswith("error: no space at") and r.output.count("\n") == 1
    )
