"""The benchmark's world and recipe parameters: world 0 is the committed recipe 2 (same scene
seeds, same initial weights); other worlds draw other scenes and weights, deterministically;
recipe 3 trains regression tasks on standardised targets."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from onnxattr.benchmark.models import TaskNet, init_seed, target_scaling, train
from onnxattr.benchmark.run import run_benchmark
from onnxattr.benchmark.scenes import TASKS, generate
from onnxattr.benchmark.world import QUICK, Config, ModelSpec, committed_dir, scene_seeds
from onnxattr.cli import app
from onnxattr.errors import OnnxAttrError
from onnxattr.transfer.heads import _r2


def _weights(name: str, world: int) -> np.ndarray:
    torch.manual_seed(init_seed(name, world))
    net = TaskNet(TASKS["depth"])
    return torch.cat([p.detach().ravel() for p in net.parameters()]).numpy()


def test_world_zero_is_the_committed_recipe() -> None:
    assert Config().world == 0
    assert scene_seeds(0) == {"train": 1, "val": 2, "transfer": 3, "probe": 4}
    manifest = json.loads((committed_dir() / "manifest.json").read_text())
    assert Config().scene_seeds == manifest["scene_seeds"]
    for name in ("depth", "segment_semantic.keras", "normals.s1"):
        want = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")
        assert init_seed(name) == init_seed(name, 0) == want


def test_worlds_differ_and_each_is_deterministic() -> None:
    seeds = [set(scene_seeds(w).values()) for w in range(4)]
    assert all(len(s) == 4 for s in seeds)
    assert len(set.union(*seeds)) == 16  # no seed shared by two sets or two worlds
    probe = {w: generate(3, scene_seeds(w)["probe"]).images for w in (0, 1, 2)}
    np.testing.assert_array_equal(probe[1], generate(3, scene_seeds(1)["probe"]).images)
    assert not np.array_equal(probe[0], probe[1]) and not np.array_equal(probe[1], probe[2])
    np.testing.assert_array_equal(_weights("depth", 2), _weights("depth", 2))
    assert not np.allclose(_weights("depth", 0), _weights("depth", 1))
    assert not np.allclose(_weights("depth", 1), _weights("depth", 2))
    assert replace(QUICK, world=3).settings()["world"] == 3


def test_only_committed_worlds_can_be_reused(tmp_path) -> None:
    with pytest.raises(OnnxAttrError, match="world 7 is not committed"):
        run_benchmark(tmp_path, replace(QUICK, world=7), use_committed=True)
    with pytest.raises(OnnxAttrError, match="recipe must be one of"):
        Config(recipe=1)
    with pytest.raises(OnnxAttrError, match="0 or more"):
        scene_seeds(-1)
    r = CliRunner().invoke(app, ["bench", "taskonomy-mini", "--world", "-1", "--out", str(tmp_path)])
    assert r.exit_code != 0


def test_standardised_target_makes_mse_one_minus_pooled_r2() -> None:
    rng = np.random.default_rng(0)
    y = (rng.normal(size=(40, 3, 4, 4)) * [[[[1.0]], [[5.0]], [[0.2]]]] + 7).astype(np.float32)
    pred = y + rng.normal(size=y.shape).astype(np.float32)
    mu, sd = target_scaling(y)
    ys, ps = (y - mu) / sd, (pred - mu) / sd
    np.testing.assert_allclose(ys.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    assert abs(float((ys**2).mean()) - 1) < 1e-5
    flat = lambda a: a.transpose(0, 2, 3, 1).reshape(-1, 3)  # noqa: E731 (as the oracle pools)
    assert abs(float(((ps - ys) ** 2).mean()) - (1 - _r2(flat(pred), flat(y)))) < 1e-4


@pytest.mark.parametrize("task", ["depth", "segment_semantic"])
def test_recipe_three_standardises_regression_targets_only(task) -> None:
    scenes = generate(48, 11)
    pre = ModelSpec(task, task).pre()

    def fit(standardise: bool) -> tuple[float, np.ndarray]:
        torch.manual_seed(0)
        net = TaskNet(TASKS[task])
        res = train(net, pre, scenes, scenes, 1, 0, 16, standardise=standardise)
        return res.val_loss, torch.cat([p.detach().ravel() for p in net.parameters()]).numpy()

    (raw_loss, raw_w), (std_loss, std_w) = fit(False), fit(True)
    if TASKS[task].kind == "dense_reg":  # trained on another scale: other weights, other loss
        assert not np.allclose(raw_w, std_w) and raw_loss != std_loss
        assert 0.3 < std_loss < 3  # unit-variance targets: an untrained net scores about 1
    else:
        np.testing.assert_array_equal(raw_w, std_w)
        assert raw_loss == std_loss
    assert Config().recipe == 3 and Config().standardise and not Config(recipe=2).standardise
