"""The mini-Taskonomy benchmark: scene ground truth, the quick mode end to end, and the committed
encoders and oracle (the oracle must be what the committed encoders give)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from onnxattr.analysis.evaluation import read_oracle
from onnxattr.benchmark.run import run_benchmark
from onnxattr.benchmark.sanity import sanity as benchmark_sanity
from onnxattr.benchmark.scenes import DENSE, TASKS, generate
from onnxattr.benchmark.world import (
    COMMITTED_WORLDS,
    MODELS,
    QUICK,
    SCENE_SEEDS,
    Config,
    committed_dir,
    scene_seeds,
)
from onnxattr.cli import app
from onnxattr.transfer import EncoderRunner, fit_score


def test_scenes_are_seeded_and_consistent():
    a, b = generate(8, 5), generate(8, 5)
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, generate(8, 6).images)
    for name, task in TASKS.items():
        y = a.targets[name]
        if task.kind == "dense_reg":
            assert y.shape == (8, task.channels, DENSE, DENSE) and np.isfinite(y).all()
        else:
            assert task.kind == "dense_cls"
            assert y.shape == (8, DENSE, DENSE) and y.max() < task.channels
    assert 0 <= a.targets["depth"].min() and a.targets["depth"].max() <= 1
    seg = a.targets["segment_semantic"]
    for i in range(8):  # wall and floor are visible, and at least one object
        assert {0, 1} < set(np.unique(seg[i]).tolist())
    # planes (wall, floor) have no curvature and no 3D corners; spheres are curved everywhere
    plane, sphere = seg <= 1, seg == 2
    assert np.median(a.targets["curvature"][:, 0][plane]) == 0
    assert np.median(a.targets["keypoints3d"][:, 0][plane]) == 0
    if sphere.any():
        assert a.targets["curvature"][:, 0][sphere].mean() > 0.1
    # normals of flat regions (wall/floor interiors) are unit vectors; autoencoder = the image
    n = a.targets["normals"]
    assert np.allclose(np.linalg.norm(n, axis=1).max(), 1, atol=1e-5)
    img = a.images.astype(np.float32).reshape(8, DENSE, 4, DENSE, 4, 3).mean((2, 4)) / 255
    np.testing.assert_allclose(a.targets["autoencoder"], img.transpose(0, 3, 1, 2), atol=1e-6)
    assert (a.inputs("colorization")[..., 0] == a.inputs("colorization")[..., 2]).all()
    assert not np.array_equal(a.inputs("denoise"), a.images)


def test_quick_mode_end_to_end(tmp_path):
    r = CliRunner().invoke(app, ["bench", "taskonomy-mini", "--quick", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    orc = read_oracle(tmp_path / "oracle.csv")
    assert orc.targets == orc.sources == ["depth", "normals", "edge_texture"]
    full = read_oracle(tmp_path / "oracle_full.csv")
    assert full.sources == [m.name for m in QUICK.models] and np.isfinite(full.values).all()
    res = json.loads((tmp_path / "results.json").read_text())
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert res["world"] == manifest["world"] == 0 and manifest["scene_seeds"] == SCENE_SEEDS
    names = [row["estimator"] for row in res["estimators"]["oracle_full"]]
    assert {"saliency", "grad_input", "svcca", "cka", "rsa", "random (expected)"} <= set(names)
    sanity = json.loads((tmp_path / "sanity.json").read_text())
    assert sanity["variants"]["depth.s1"]["kind"] == "seed"
    assert "P@1" in (tmp_path / "results.md").read_text()


def _manifest(world: int = 0) -> list[dict]:
    return json.loads((committed_dir(world) / "manifest.json").read_text())["models"]


@pytest.mark.parametrize("world", COMMITTED_WORLDS)
def test_committed_encoders_and_oracle_are_complete(world):
    data = committed_dir(world)
    meta = json.loads((data / "manifest.json").read_text())
    assert meta.get("world", 0) == world and meta["scene_seeds"] == scene_seeds(world)
    assert meta.get("recipe", 2) == (2 if world == 0 else 3)
    models = meta["models"]
    assert [m["name"] for m in models] == [m.name for m in MODELS]
    for m in models:
        assert hashlib.sha256((data / m["file"]).read_bytes()).hexdigest() == m["sha256"]
    assert sum(m["framework"] == "keras" for m in models) >= 3
    assert sum(m["arch"] != "resnet" or m["input_size"] != 64 for m in models) >= 3
    assert len({m["task"] for m in models if m["seed"] == 1}) >= 4
    orc = read_oracle(data / "oracle.csv")
    assert orc.targets == orc.sources == list(TASKS)
    full = read_oracle(data / "oracle_full.csv")
    assert full.targets == list(TASKS) and full.sources == [m["name"] for m in models]
    assert np.isfinite(full.values).all()
    np.testing.assert_array_equal(orc.values, full.values[:, : len(TASKS)])
    sanity = json.loads((data / "sanity.json").read_text())
    assert sanity == benchmark_sanity(data / "oracle_full.csv", models)


def _remeasure(sources: tuple[str, ...], targets: tuple[str, ...], world: int = 0) -> None:
    cfg = Config()
    data = committed_dir(world)
    scenes = generate(cfg.n_transfer, scene_seeds(world)["transfer"])
    full = read_oracle(data / "oracle_full.csv")
    by_name = {m["name"]: m for m in _manifest(world)}
    for source in sources:
        m = by_name[source]
        runner = EncoderRunner.from_file(data / m["file"], m["encoder_node"], m["preprocessing"])
        feats, designs = {}, {}
        for t in targets:
            task = TASKS[t]
            if task.input not in feats:
                feats[task.input] = runner.run(scenes.inputs(t))
            got = fit_score(
                feats[task.input],
                scenes.targets[t],
                task.kind,
                task.channels,
                designs=designs.setdefault(task.input, {}),
            )
            want = full.values[full.targets.index(t), full.sources.index(source)]
            assert got.score == pytest.approx(want, abs=2e-3), (world, source, t)


def test_committed_oracle_is_what_the_committed_encoders_give():
    """A subset: a PyTorch and a Keras/tf2onnx source; regression, classes and noisy targets."""
    _remeasure(
        ("depth", "segment_semantic.keras"), ("depth", "segment_semantic", "curvature", "denoise")
    )


@pytest.mark.parametrize("world", [w for w in COMMITTED_WORLDS if w])
def test_committed_worlds_oracles_are_what_their_encoders_give(world):
    _remeasure(("normals.in32",), ("reshading", "segment_semantic"), world)


@pytest.mark.slow
@pytest.mark.parametrize("world", COMMITTED_WORLDS)
def test_committed_oracle_all_targets(world):
    _remeasure(
        ("depth", "segment_semantic.keras", "normals.in32", "reshading.plain"), tuple(TASKS), world
    )


@pytest.mark.tf
@pytest.mark.slow
def test_keras_twin_trains_and_converts(tmp_path):
    from dataclasses import replace

    cfg = replace(
        QUICK,
        n_train=64,
        models=tuple(m for m in MODELS if m.name in ("depth", "normals", "depth.keras")),
    )
    res = run_benchmark(tmp_path, cfg)
    entry = json.loads((tmp_path / "manifest.json").read_text())["models"][2]
    assert entry["framework"] == "keras" and entry["tf2onnx_check"]["encoder_rel_err"] < 1e-4
    assert res.sanity["variants"]["depth.keras"]["kind"] == "framework"
