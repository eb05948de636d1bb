"""Label-based estimates (`onnxattr transfer --estimate`): each against an independent reference.

LogME: its maximised evidence against a brute-force grid search of the closed-form log evidence
(solved directly, no eigenbasis). H-score: a hand-computed value and the formula with explicit
loops. LEEP/NCE: counting on small discrete examples. SFDA: the paper's steps (scatter matrices,
generalised eigenproblem, projection, ConfMix) written out. Then sanity properties: features that
hold the labels score above noise for every estimate, and the invariances the papers state.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import linalg
from typer.testing import CliRunner

from onnxattr.analysis.distances import read_labelled_csv
from onnxattr.cli import app
from onnxattr.errors import OnnxAttrError
from onnxattr.pipeline import add_model
from onnxattr.space import ModelSpace
from onnxattr.transfer import estimates as E

from .conftest import random_probe
from .models import TinyResNet, TinyVGG, export, randomize_bn

SIZE = 24
runner = CliRunner()


# ------------------------------------------------------------------------------------ LogME
def _log_evidence(f: np.ndarray, y: np.ndarray, alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """log p(y | F, α, β) / n of Bayesian linear regression, computed directly (a batched solve
    and log-determinant per (α, β) pair)."""
    n, d = f.shape
    a = alpha[:, None, None] * np.eye(d) + beta[:, None, None] * (f.T @ f)
    m = beta[:, None] * np.linalg.solve(a, np.broadcast_to(f.T @ y, (len(a), d))[..., None])[..., 0]
    _, logdet = np.linalg.slogdet(a)
    ev = (
        n / 2 * np.log(beta)
        + d / 2 * np.log(alpha)
        - n / 2 * math.log(2 * math.pi)
        - beta / 2 * ((m @ f.T - y) ** 2).sum(1)
        - alpha / 2 * (m * m).sum(1)
        - logdet / 2
    )
    return ev / n


def _grid_max(f: np.ndarray, y: np.ndarray) -> float:
    """Brute force: a log-spaced grid over (α, β) in [1e-8, 1e8]² (step 10^0.05), zoomed twice
    around its best point."""
    lo_a, hi_a, lo_b, hi_b, steps = -8.0, 8.0, -8.0, 8.0, 321
    best = -math.inf
    for _ in range(3):
        la, lb = np.meshgrid(np.linspace(lo_a, hi_a, steps), np.linspace(lo_b, hi_b, steps))
        vals = _log_evidence(f, y, 10 ** la.ravel(), 10 ** lb.ravel())
        i = int(vals.argmax())
        best = max(best, float(vals[i]))
        sa, sb = (hi_a - lo_a) / (steps - 1), (hi_b - lo_b) / (steps - 1)
        a, b = la.ravel()[i], lb.ravel()[i]
        lo_a, hi_a, lo_b, hi_b, steps = a - 2 * sa, a + 2 * sa, b - 2 * sb, b + 2 * sb, 41
    return best


def test_logme_is_the_maximised_evidence():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(60, 5))
    y_reg = f @ rng.normal(size=5) + rng.normal(0, 0.7, 60)
    got = E.logme(f, y_reg[:, None])
    ref = _grid_max(f, y_reg)
    assert got >= ref - 1e-9  # the fixed point is at least as good as any grid point
    assert got == pytest.approx(ref, abs=1e-6)
    # classes: the mean over one-hot columns
    ids = rng.integers(0, 3, 60)
    onehot = np.eye(3)[ids]
    ref = np.mean([_grid_max(f, onehot[:, k]) for k in range(3)])
    assert E.logme(f, ids) == pytest.approx(ref, abs=1e-6)


def test_logme_rotation_invariant():
    """An isotropic prior on the weights: rotating the features leaves the evidence as it is."""
    rng = np.random.default_rng(1)
    f = rng.normal(size=(80, 6))
    y = f[:, :2] @ [1.0, -2.0] + rng.normal(0, 0.3, 80)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    assert E.logme(f @ q, y[:, None]) == pytest.approx(E.logme(f, y[:, None]), abs=1e-9)


# ------------------------------------------------------------------------------------ H-score
def test_hscore_by_hand():
    # x = 0, 2, 4, 6; classes {0, 2}, {4, 6}: cov(f) = 5, E[f|y] - mean = ±2, cov = 4 → 0.8
    x = np.array([[0.0], [2.0], [4.0], [6.0]])
    y = np.array([0, 0, 1, 1])
    assert E.hscore(x, y, shrinkage=False) == pytest.approx(0.8)
    assert E.hscore(x, y) == pytest.approx(0.8)  # one dimension: nothing to shrink towards


def _ledoit_wolf_loop(x: np.ndarray) -> float:
    x = x - x.mean(0)
    n, p = x.shape
    s = x.T @ x / n
    mu = np.trace(s) / p
    delta = np.linalg.norm(s - mu * np.eye(p), "fro") ** 2 / p
    beta = sum(np.linalg.norm(np.outer(v, v) - s, "fro") ** 2 for v in x) / n**2 / p
    return min(beta, delta) / delta


def test_hscore_formula_and_shrinkage():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 40)
    x = rng.normal(size=(40, 4)) + np.eye(3, 4)[y] * 1.5
    xc = x - x.mean(0)
    g = np.stack([xc[y == c].mean(0) for c in range(3)])[y]
    cov_f, cov_g = xc.T @ xc / 40, g.T @ g / 40
    assert E.hscore(x, y, shrinkage=False) == pytest.approx(
        np.trace(np.linalg.inv(cov_f) @ cov_g), rel=1e-9
    )
    a = _ledoit_wolf_loop(x)
    assert E.ledoit_wolf(xc) == pytest.approx(a, rel=1e-9)
    shrunk = (1 - a) * cov_f + a * np.trace(cov_f) / 4 * np.eye(4)
    assert E.hscore(x, y) == pytest.approx(
        np.trace(np.linalg.inv(shrunk) @ ((1 - a) * cov_g)), rel=1e-9
    )
    # Bao et al.: invariant to any invertible linear map of the features
    m = rng.normal(size=(4, 4))
    assert E.hscore(x @ m, y, shrinkage=False) == pytest.approx(
        E.hscore(x, y, shrinkage=False), rel=1e-7
    )


# ------------------------------------------------------------------------------------ LEEP, NCE
def test_leep_and_nce_by_counting():
    z = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 0])
    y = np.array([0, 0, 1, 1, 1, 0, 2, 2, 2, 1])
    n = len(y)
    pair, cz = Counter(zip(y.tolist(), z.tolist())), Counter(z.tolist())
    nce = sum(c / n * math.log(c / cz[zz]) for (yy, zz), c in pair.items())
    assert E.nce_from(z, y) == pytest.approx(nce)
    # hard source labels: LEEP = mean log P(y_i | z_i)
    leep = np.mean([math.log(pair[(a, b)] / cz[b]) for a, b in zip(y, z)])
    assert E.leep_from(np.eye(3)[z], y) == pytest.approx(leep)
    # soft source labels, Nguyen et al.'s sums written out
    rng = np.random.default_rng(3)
    theta = rng.dirichlet(np.ones(3), n)
    joint = np.zeros((3, 3))
    for i in range(n):
        for zz in range(3):
            joint[y[i], zz] += theta[i, zz] / n
    ref = np.mean(
        [
            math.log(sum(joint[y[i], zz] / joint[:, zz].sum() * theta[i, zz] for zz in range(3)))
            for i in range(n)
        ]
    )
    assert E.leep_from(theta, y) == pytest.approx(ref)
    # renaming the target classes changes nothing
    perm = np.array([2, 0, 1])
    assert E.leep_from(theta, perm[y]) == pytest.approx(ref)
    assert E.nce_from(z, perm[y]) == pytest.approx(nce)


# ------------------------------------------------------------------------------------ SFDA
def _sfda_paper(x: np.ndarray, y: np.ndarray) -> float:
    """Shao et al.'s steps: regularised FDA by the generalised eigenproblem, posteriors, a second
    softmax, ConfMix towards the other classes' mean, a second FDA with the same shrinkage."""
    classes = np.unique(y)
    k, d = len(classes), x.shape[1]

    def fda(x, lam):
        priors = np.array([(y == c).mean() for c in classes])
        means = np.array([x[y == c].mean(0) for c in classes])
        sw = sum(p * np.cov(x[y == c].T, bias=True) for p, c in zip(priors, classes))
        if lam is None:
            lam = max(math.exp(-5 * np.linalg.eigvalsh(sw).max()), 1e-10)
        sw_s = (1 - lam) * sw + lam * np.trace(sw) / d * np.eye(d)
        st = np.cov(x.T, bias=True)
        st_s = (1 - lam) * st + lam * np.trace(st) / d * np.eye(d)
        evals, evecs = linalg.eigh(st_s - sw_s, sw_s)
        v = evecs[:, np.argsort(evals)[::-1]]
        coef = means @ v @ v.T
        icpt = -0.5 * np.diag(means @ coef.T) + np.log(priors)
        s = x @ coef.T + icpt
        p = np.exp(s - s.max(1, keepdims=True))
        return p / p.sum(1, keepdims=True), lam, means

    prob, lam, means = fda(x.copy(), None)
    prob = np.exp(prob) / np.exp(prob).sum(1, keepdims=True)
    outer = np.array([(means.sum(0) - means[i]) / (k - 1) for i in range(k)])
    mixed = x.copy()
    for i in range(len(x)):
        p = prob[i, y[i]]
        mixed[i] = p * x[i] + (1 - p) * outer[y[i]]
    prob2, _, _ = fda(mixed, lam)
    return float(np.mean([prob2[i, y[i]] for i in range(len(x))]))


@pytest.mark.parametrize("scale", [0.05, 1.0])  # strong and negligible shrinkage
def test_sfda_matches_the_papers_steps(scale):
    rng = np.random.default_rng(4)
    y = np.repeat([0, 1, 2], 10)
    x = scale * (rng.normal(size=(30, 3)) + np.eye(3)[y])
    assert E.sfda(x, y) == pytest.approx(_sfda_paper(x, y), rel=1e-7)


# ------------------------------------------------------------------------------------ sanity
@pytest.mark.parametrize("name", list(E.ESTIMATES))
@pytest.mark.parametrize("kind", ["image_cls", "image_reg"])
def test_label_features_beat_noise(name, kind):
    rng = np.random.default_rng(5)
    n = 300
    if kind == "image_cls":
        y = rng.integers(0, 4, n)
        signal = np.eye(4)[y]
    else:
        y = rng.normal(size=(n, 2))
        signal = y
    good = np.hstack([3 * signal, rng.normal(size=(n, 6))]) + 0.3 * rng.normal(
        size=(n, 6 + signal.shape[1])
    )
    bad = rng.normal(size=good.shape)
    assert E.score(name, good, y, kind) > E.score(name, bad, y, kind)


def test_dense_samples_align_pixels_and_labels():
    rng = np.random.default_rng(6)
    lab = rng.normal(size=(5, 2, 8, 8)).astype(np.float32)
    # features at the label resolution: bilinear resizing to the same size is the identity
    x, y = E.samples(lab, lab, dense=True, max_samples=100, seed=0)
    assert x.shape == (5 * 20, 2) and y.shape == (100, 2)
    np.testing.assert_allclose(x, y, atol=1e-6)
    ids = rng.integers(0, 3, (5, 8, 8))
    x, y = E.samples(np.eye(3, dtype=np.float32)[ids].transpose(0, 3, 1, 2), ids, True, 1000)
    assert len(y) == 5 * 64  # capped at every pixel
    np.testing.assert_array_equal(x.argmax(1), y)


@pytest.mark.parametrize("name", list(E.ESTIMATES))
def test_dense_label_features_beat_noise(name):
    rng = np.random.default_rng(7)
    depth = rng.uniform(size=(30, 1, 4, 4)).repeat(2, 2).repeat(2, 3)  # (30, 1, 8, 8) labels
    good = np.concatenate([4 * depth[:, :, ::2, ::2], rng.normal(size=(30, 3, 4, 4))], 1)
    bad = rng.normal(size=good.shape)
    assert E.score(name, good, depth, "dense_reg", max_samples=600) > E.score(
        name, bad, depth, "dense_reg", max_samples=600
    )


def test_quantise():
    y = np.arange(80.0)
    np.testing.assert_array_equal(np.bincount(E.quantise(y, 8)), [10] * 8)  # equal frequency
    assert E.quantise(np.c_[y, -y], 4).max() == 3
    edges = np.r_[np.zeros(90), np.linspace(0.1, 1, 10)]  # mostly zeros: zeros one bin, rest others
    q = E.quantise(edges, 8)
    assert (q[:90] == 0).all() and (q[90:] > 0).all()
    with pytest.raises(OnnxAttrError, match="constant"):
        E.quantise(np.ones(10))


def test_unknown_estimate_and_one_class():
    with pytest.raises(OnnxAttrError, match="unknown estimate 'logmee'; did you mean 'logme'"):
        E.get_estimate("logmee")
    x = np.random.default_rng(8).normal(size=(20, 3))
    for name in E.ESTIMATES:
        with pytest.raises(OnnxAttrError, match="single class"):
            E.score(name, x, np.zeros(20, dtype=np.int64), "image_cls")


# ------------------------------------------------------------------------------------ CLI
@pytest.fixture
def space(tmp_path):
    torch.manual_seed(0)
    res = export(randomize_bn(TinyResNet()), tmp_path / "res.onnx", (1, 3, SIZE, SIZE))
    vgg = export(TinyVGG(), tmp_path / "vgg.onnx", (1, 3, SIZE, SIZE))
    sp = tmp_path / "space.h5"
    ModelSpace(sp).write_probe(random_probe(n=4, size=SIZE))
    for name, path in (("res", res), ("vgg", vgg)):
        add_model(
            sp,
            path,
            name=name,
            preprocessing={"preset": "imagenet"},
            methods=["saliency"],
            progress=False,
        )
    return sp


def _images(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, (n, 3, 3, 3))
    img = np.kron(base, np.ones((1, SIZE // 3, SIZE // 3, 1)))
    return np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)


def test_cli_estimates(tmp_path, space):
    cls = tmp_path / "cls"
    imgs = _images(24, 1)
    for i, im in enumerate(imgs):
        d = cls / ("bright" if im.mean() > imgs.mean() else "dark")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(d / f"{i}.png")
    dense = tmp_path / "dense"
    dense.mkdir()
    for i, im in enumerate(_images(20, 2)):
        Image.fromarray(im).save(dense / f"{i}.png")
        np.save(dense / f"{i}.npy", im[..., 0].astype(np.float32).reshape(6, 4, 6, 4).mean((1, 3)))
    out = tmp_path / "est.csv"
    r = runner.invoke(
        app, ["transfer", str(cls), "-s", str(space), "--estimate", "logme,hscore", "-o", str(out)]
    )
    assert r.exit_code == 0, r.output
    assert "logme (higher = better)" in r.output and "[2/2]" in r.output
    r = runner.invoke(
        app,
        [
            "transfer",
            str(dense),
            "-s",
            str(space),
            "--estimate",
            ",".join(E.ESTIMATES),
            "-o",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    rows, cols, vals = read_labelled_csv(out)
    assert rows == ["cls:logme", "cls:hscore", *(f"dense:{e}" for e in E.ESTIMATES)]
    assert sorted(cols) == ["res", "vgg"] and np.isfinite(vals).all()
    assert not (tmp_path / "transfers.csv").exists()
    r = runner.invoke(app, ["transfer", str(cls), "-s", str(space), "--estimate", "leap"])
    assert r.exit_code != 0 and "unknown estimate 'leap'" in r.output
