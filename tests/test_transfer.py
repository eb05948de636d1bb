"""`onnxattr transfer`: measured transfer from a space's sources to labelled targets.

References: the head's score against an independent closed-form ridge on features from the
original torch module; a source transferring to its own teacher outputs (R² = 1); bad input
leaves the space and the cache as they were.
"""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from scipy import linalg
from typer.testing import CliRunner

from onnxattr.analysis.distances import read_labelled_csv
from onnxattr.cli import app
from onnxattr.pipeline import add_model
from onnxattr.space import ModelSpace
from onnxattr.transfer import TargetTask, fit_score, load_folder, measure_transfer
from onnxattr.transfer.heads import ALPHAS, image_design, split

from .conftest import random_probe
from .models import TinyResNet, TinyVGG, export, randomize_bn

SIZE = 24
runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _encoder_tensor(path) -> str:
    """TinyResNet's pre-pooling feature tensor (input of the ReduceMean)."""
    m = onnx.load(str(path))
    return next(n.input[0] for n in m.graph.node if n.op_type == "ReduceMean")


@pytest.fixture
def space(tmp_path):
    torch.manual_seed(0)
    res = export(randomize_bn(TinyResNet()), tmp_path / "res.onnx", (1, 3, SIZE, SIZE))
    vgg = export(TinyVGG(), tmp_path / "vgg.onnx", (1, 3, SIZE, SIZE))
    sp = tmp_path / "space.h5"
    ModelSpace(sp).write_probe(random_probe(n=4, size=SIZE))
    pre = {"preset": "imagenet"}
    add_model(
        sp,
        res,
        _encoder_tensor(res),
        name="res",
        preprocessing=pre,
        methods=["saliency"],
        progress=False,
    )
    add_model(sp, vgg, name="vgg", preprocessing=pre, methods=["saliency"], progress=False)
    return sp


def _images(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, (n, 3, 3, 3))
    img = np.kron(base, np.ones((1, SIZE // 3, SIZE // 3, 1)))
    return np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture
def class_folder(tmp_path):
    d = tmp_path / "cls"
    imgs = _images(24, 1)
    for i, im in enumerate(imgs):
        label = "bright" if im.mean() > imgs.mean() else "dark"
        (d / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(d / label / f"{i}.png")
    return d


@pytest.fixture
def dense_folder(tmp_path):
    """Images with a per-pixel regression target: the red channel, 4×4-pooled."""
    d = tmp_path / "dense"
    d.mkdir()
    for i, im in enumerate(_images(20, 2)):
        Image.fromarray(im).save(d / f"{i}.png")
        red = im[..., 0].astype(np.float32).reshape(6, 4, 6, 4).mean((1, 3)) / 255
        np.save(d / f"{i}.npy", red)
    return d


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(path) -> dict[str, str]:
    return (
        {p.name: _digest(p) for p in sorted(path.rglob("*")) if p.is_file()}
        if path.exists()
        else {}
    )


def test_head_matches_independent_ridge(space):
    """fit_score on onnxruntime features == a ridge solved with scipy on torch features."""
    images = _images(40, 3)
    rng = np.random.default_rng(0)
    from onnxattr.transfer import load_sources

    (src,) = [s for s in load_sources(space) if s.name == "res"]
    feats = src.runner.run(images, batch_size=7)
    # reference features: the original torch module on the same preprocessing
    torch.manual_seed(0)
    net = randomize_bn(TinyResNet())
    with torch.no_grad():
        ref = net.features(src.runner.pre.apply(images)).numpy()
    np.testing.assert_allclose(feats, ref, rtol=1e-4, atol=1e-5)
    x = image_design(ref).astype(np.float64)
    y = x @ rng.normal(size=(x.shape[1], 2)) + rng.normal(0, 0.5, (len(x), 2))
    got = fit_score(feats, y.astype(np.float32), "image_reg", 2)
    tr, va, te = split(len(y), 0)
    mu, sd = x[tr].mean(0), x[tr].std(0)
    sd[sd < 1e-12] = np.inf
    xs = (x - mu) / sd
    g = xs[tr].T @ xs[tr]
    lam = got.alpha * np.trace(g) / g.shape[0]
    w = linalg.solve(g + lam * np.eye(len(g)), xs[tr].T @ (y[tr] - y[tr].mean(0)), assume_a="pos")
    pred = xs[te] @ w + y[tr].mean(0)
    r2 = 1 - ((pred - y[te]) ** 2).sum() / ((y[te] - y[te].mean(0)) ** 2).sum()
    assert got.metric == "R²" and got.alpha in ALPHAS
    assert got.score == pytest.approx(r2, abs=1e-6)


def test_folder_classes_to_matrix_that_evaluate_reads(tmp_path, space, class_folder):
    out = tmp_path / "transfers.csv"
    r = run("transfer", class_folder, "--space", space, "--out", out, "--name", "vgg")
    assert r.exit_code == 0, r.output
    assert "accuracy" in r.output and "[2/2]" in r.output
    targets, sources, vals = read_labelled_csv(out)
    assert targets == ["vgg"] and sorted(sources) == ["res", "vgg"]
    assert ((vals >= 0) & (vals <= 1)).all()
    raw = json.loads(out.with_suffix(".json").read_text())
    assert raw["targets"]["vgg"]["kind"] == "image_cls"
    assert raw["settings"]["recipe"]["split"] == [0.6, 0.2, 0.2]
    assert set(raw["scores"]["vgg"]) == {"res", "vgg"}
    r = run("transfer", class_folder, "--space", space, "--out", out, "--name", "res")
    assert r.exit_code == 0 and "0 measured, 1 cached" in r.output  # same data: from the cache
    targets, _, _ = read_labelled_csv(out)
    assert targets == ["vgg", "res"]  # rows merged
    r = run("evaluate", "--oracle", out, "--space", space, "-m", "saliency")
    assert r.exit_code == 0, r.output


def test_cache_per_source_and_target(tmp_path, space, class_folder):
    target = load_folder(class_folder, SIZE)
    cache = tmp_path / "cache"
    lines: list[str] = []
    first = measure_transfer(space, [target], cache=cache, log=lines.append)
    assert all("1 measured, 0 cached" in ln for ln in lines)
    lines.clear()
    again = measure_transfer(space, [target], cache=cache, log=lines.append)
    assert all("0 measured, 1 cached" in ln for ln in lines)
    np.testing.assert_array_equal(first.matrix(), again.matrix())
    # a new source: only its column is computed
    add_model(
        space,
        tmp_path / "vgg.onnx",
        name="vgg2",
        preprocessing={"preset": "caffe"},
        methods=["saliency"],
        progress=False,
    )
    lines.clear()
    measure_transfer(space, [target], cache=cache, log=lines.append)
    assert sum("1 measured" in ln for ln in lines) == 1 and "vgg2" in lines[-1]
    # per-scene sums: measured again (the cache keeps scores), the same scores
    lines.clear()
    with_scenes = measure_transfer(space, [target], cache=cache, log=lines.append, scenes=True)
    assert all("0 cached" in ln for ln in lines)
    for key, sc in with_scenes.scores.items():
        assert with_scenes.scenes[key].score() == pytest.approx(sc.score, abs=1e-6)
    assert not measure_transfer(space, [target], cache=cache).scenes


def test_dense_regression_and_classes(space, dense_folder, tmp_path):
    target = load_folder(dense_folder, SIZE)
    assert target.kind == "dense_reg" and target.y.shape == (20, 1, 6, 6)
    res = measure_transfer(space, [target], use_cache=False)
    assert all(np.isfinite(res.matrix()).ravel())
    # integer maps: dense classes, scored by mean IoU
    d = tmp_path / "seg"
    shutil.copytree(dense_folder, d)
    for p in d.glob("*.npy"):
        np.save(p, (np.load(p) > 0.5).astype(np.int64))
    seg = load_folder(d, SIZE)
    assert seg.kind == "dense_cls"
    res = measure_transfer(space, [seg], use_cache=False)
    sc = res.scores[("seg", "res")]
    assert sc.metric == "mean IoU" and 0 <= sc.score <= 1


def test_teacher_target_self_transfer_is_perfect(tmp_path, space):
    """The teacher's logits are linear in its pooled features: its own encoder scores R² ≈ 1."""
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    for i, im in enumerate(_images(100, 4)):
        Image.fromarray(im).save(folder / f"{i}.png")
    out = tmp_path / "t.csv"
    r = run(
        "transfer",
        folder,
        "--space",
        space,
        "--teacher",
        tmp_path / "res.onnx",
        "--teacher-preset",
        "imagenet",
        "--out",
        out,
        "--name",
        "res",
        "--no-cache",
    )
    assert r.exit_code == 0, r.output
    assert "image reg" in r.output and "R²" in r.output
    _, sources, vals = read_labelled_csv(out)
    scores = dict(zip(sources, vals[0]))
    assert scores["res"] > 0.99
    assert scores["vgg"] < scores["res"]
    assert not (tmp_path / "space.h5.transfer-cache").exists()


def _one_line_error(r, pattern: str) -> None:
    assert r.exit_code != 0
    assert "Traceback" not in r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output
    assert pattern in r.output, r.output


@pytest.mark.parametrize(
    "case",
    [
        "no_labels",
        "wrong_shape",
        "one_image_class",
        "missing_onnx",
        "changed_onnx",
        "empty_space",
        "teacher_node_only",
    ],
)
def test_bad_input(tmp_path, space, class_folder, dense_folder, case):
    cache = tmp_path / "cache"
    data, sp, extra = class_folder, space, []
    run("transfer", class_folder, "--space", space, "--cache", cache, "--out", tmp_path / "a.csv")
    if case == "no_labels":
        data = tmp_path / "loose"
        data.mkdir()
        for p in list(class_folder.rglob("*.png"))[:5]:
            shutil.copy(p, data / p.name)
        pattern = "have no labels"
    elif case == "wrong_shape":
        data = dense_folder
        np.save(dense_folder / "3.npy", np.zeros((6, 9), np.float32))
        pattern = "aspect ratio"
    elif case == "one_image_class":
        (class_folder / "rare").mkdir()
        shutil.copy(next(class_folder.rglob("*.png")), class_folder / "rare" / "x.png")
        pattern = "class 'rare'"
    elif case == "missing_onnx":
        (tmp_path / "vgg.onnx").rename(tmp_path / "moved.onnx")
        pattern = "is missing"
    elif case == "changed_onnx":
        export(TinyVGG(), tmp_path / "vgg.onnx", (1, 3, SIZE, SIZE))
        pattern = "has changed since it was added"
    elif case == "empty_space":
        sp = tmp_path / "empty.h5"
        ModelSpace(sp).write_probe(random_probe(n=4, size=SIZE))
        pattern = "holds no models"
    else:
        extra = ["--teacher-node", "x"]
        pattern = "--teacher-node needs --teacher"
    before = _digest(sp), _tree(cache)
    r = run("transfer", data, "--space", sp, "--cache", cache, "--out", tmp_path / "b.csv", *extra)
    _one_line_error(r, pattern)
    assert (_digest(sp), _tree(cache)) == before
    assert not (tmp_path / "b.csv").exists()


def test_target_validation():
    images = np.zeros((12, 8, 8, 3), np.uint8)
    with pytest.raises(Exception, match="at least 10"):
        TargetTask("t", images[:5], np.zeros(5, np.int64), "image_cls")
    with pytest.raises(Exception, match="single class"):
        TargetTask("t", images, np.zeros(12, np.int64), "image_cls")
    with pytest.raises(Exception, match="NaN"):
        TargetTask("t", images, np.full((12, 1), np.nan, np.float32), "image_reg")


def test_api_transfer_is_what_the_command_measures(tmp_path, space, class_folder):
    """`onnxattr.transfer_target` + `measure_transfer` (a notebook's calls) write the same matrix as
    `onnxattr transfer`; `estimate_transfer` ranks the same sources."""
    import onnxattr

    r = run("transfer", class_folder, "--space", space, "--out", tmp_path / "cli.csv",
            "--name", "vgg", "--no-cache")
    assert r.exit_code == 0, r.output
    target = onnxattr.transfer_target(space, class_folder, name="vgg")
    res = onnxattr.measure_transfer(space, target, out=tmp_path / "api.csv", use_cache=False)
    assert res.written[0] == tmp_path / "api.csv"
    assert read_labelled_csv(tmp_path / "api.csv")[2].tolist() == read_labelled_csv(
        tmp_path / "cli.csv")[2].tolist()
    est = onnxattr.estimate_transfer(space, target, ["logme"], out=None)
    assert sorted(est.sources) == ["res", "vgg"] and not est.written
    with pytest.raises(onnxattr.OnnxAttrError, match="`out` .* is a folder"):
        onnxattr.measure_transfer(space, target, out=tmp_path)


@pytest.mark.parametrize("kind", ["image_cls", "image_reg", "dense_reg", "dense_cls"])
def test_scene_stats_give_the_score_and_any_resample_of_it(kind):
    """The oracle's test-scene bootstrap: per-scene sums give the head's score exactly, and the
    score of a resample (repeats as weights) as the metric computes it on those scenes."""
    from onnxattr.transfer.heads import SceneStats, _miou, _miou_stats, _r2, _r2_stats

    rng = np.random.default_rng(0)
    n = 60
    if kind.startswith("image"):
        feats = rng.normal(size=(n, 6, 4, 4)).astype(np.float32)
        y = rng.integers(0, 3, n) if kind == "image_cls" else rng.normal(size=(n, 2)).astype(np.float32)
    else:
        feats = rng.normal(size=(n, 5, 4, 4)).astype(np.float32)
        y = rng.integers(0, 3, (n, 8, 8)) if kind == "dense_cls" else rng.normal(size=(n, 2, 8, 8)).astype(np.float32)
    got = fit_score(feats, y, kind, 3 if kind.endswith("cls") else 2, scenes=True)
    assert got.scenes.score() == pytest.approx(got.score, abs=1e-6)  # float32 targets
    assert len(got.scenes.test) == got.n_test and got.scenes.test.max() < n
    assert fit_score(feats, y, kind, 3 if kind.endswith("cls") else 2).scenes is None
    # resampling: the sums against the metric itself, on random predictions
    idx = rng.integers(0, 20, 20)
    if kind.endswith("reg"):
        pred, truth = rng.normal(size=(20, 64, 2)), rng.normal(size=(20, 64, 2))
        want = _r2(pred[idx].reshape(-1, 2), truth[idx].reshape(-1, 2))
        stats = SceneStats("R²", _r2_stats(pred, truth), np.arange(20))
    elif kind == "dense_cls":
        pred, truth = rng.integers(0, 4, (20, 8, 8)), rng.integers(0, 4, (20, 8, 8))
        want = _miou(pred[idx], truth[idx], 4)
        stats = SceneStats("mean IoU", _miou_stats(pred, truth, 4), np.arange(20))
    else:
        correct = rng.integers(0, 2, 20).astype(np.float64)
        want = correct[idx].mean()
        stats = SceneStats("accuracy", correct[:, None], np.arange(20))
    assert stats.score(np.bincount(idx, minlength=20)) == pytest.approx(want, abs=1e-9)
