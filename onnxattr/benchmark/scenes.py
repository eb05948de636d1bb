"""Seeded procedural scenes with dense ground truth for twelve Taskonomy-like tasks (numpy only).

A scene is a room seen by a pinhole camera one unit above the floor: a textured back wall at depth
Zw and a floor plane, with 1–4 objects standing on the floor — spheres, boxes, cylinders and cones —
each with its own colour or texture (procedural stripes/checks, or a patch of one of the real
photographs the embedded probe uses). Depth and surface normals are computed analytically per
pixel with a z-buffer; the image is albedo × Lambertian shading under a random directional light.

Ground truth (dense targets at S/4 × S/4, 4×4 means of the full-resolution truth):

=================  ======================  ===============================================
task               kind                    target
=================  ======================  ===============================================
depth              dense regression        log depth, scaled to [0, 1]
normals            dense regression (3)    surface normal (x right, y up, z to camera)
reshading          dense regression        shading under one fixed light, no albedo
edge_occlusion     dense regression        depth/object discontinuities (0/1)
keypoints3d        dense regression        Harris corner response of the log depth map
curvature          dense regression        surface curvature: gradient of the normals within a surface
edge_texture       dense regression        Sobel magnitude of the image
keypoints2d        dense regression        Harris corner response of the image
segment_semantic   dense classes (6)       wall, floor, sphere, box, cylinder, cone
autoencoder        dense regression (3)    the image itself
denoise            dense regression (3)    the clean image; input: image + heavy noise
colorization       dense regression (3)    the colour image; input: its gray version
=================  ======================  ===============================================

Image-level tasks (class of the largest object, object count) were in recipe 1 and are not here:
tiny networks trained on a few thousand scenes memorised them (validation at chance), so their
oracle rows were noise (docs/benchmark.md, "Recipe 2").
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

SIZE = 64
DENSE = 16  # dense targets are S/4 × S/4
N_CLASSES = 4  # sphere, box, cylinder, cone
SEG_CLASSES = 2 + N_CLASSES  # wall, floor, objects
_FIXED_LIGHT = np.array([0.4, 0.8, 0.6]) / np.linalg.norm([0.4, 0.8, 0.6])
_ZMIN, _ZMAX = 1.5, 12.0


@dataclass(frozen=True)
class Task:
    """One benchmark task: what its target is and what its encoder sees as input."""

    name: str
    kind: str  # "dense_reg" | "dense_cls" (the target kinds of onnxattr.transfer)
    channels: int  # output channels (regression) or number of classes
    input: str = "clean"  # "clean" | "noisy" | "gray"


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("depth", "dense_reg", 1),
        Task("normals", "dense_reg", 3),
        Task("reshading", "dense_reg", 1),
        Task("edge_occlusion", "dense_reg", 1),
        Task("keypoints3d", "dense_reg", 1),
        Task("curvature", "dense_reg", 1),
        Task("edge_texture", "dense_reg", 1),
        Task("keypoints2d", "dense_reg", 1),
        Task("segment_semantic", "dense_cls", SEG_CLASSES),
        Task("autoencoder", "dense_reg", 3),
        Task("denoise", "dense_reg", 3, input="noisy"),
        Task("colorization", "dense_reg", 3, input="gray"),
    )
}


@dataclass
class Scenes:
    """N rendered scenes: uint8 RGB images and every task's ground truth."""

    images: np.ndarray  # (N, S, S, 3) uint8
    targets: dict[str, np.ndarray]  # (N, C, S/4, S/4) float32 or, for classes, (N, S/4, S/4) int64
    seed: int

    def __len__(self) -> int:
        return len(self.images)

    def inputs(self, task: str) -> np.ndarray:
        """The images a task's model sees: clean, noisy (denoise) or gray (colourisation)."""
        return task_inputs(self.images, TASKS[task].input, self.seed)


def task_inputs(images: np.ndarray, kind: str, seed: int) -> np.ndarray:
    if kind == "clean":
        return images
    if kind == "gray":
        g = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        return np.repeat(np.round(g)[..., None], 3, axis=3).astype(np.uint8)
    if kind == "noisy":  # Gaussian noise (σ = 30/255) plus 5 % salt-and-pepper, seeded per set
        rng = np.random.default_rng([seed, 7])
        x = images.astype(np.float32) + rng.normal(0, 30, images.shape)
        sp = rng.random(images.shape[:3])
        x[sp < 0.025] = 0
        x[sp > 0.975] = 255
        return np.clip(np.round(x), 0, 255).astype(np.uint8)
    raise ValueError(kind)


@lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, ...]:
    """The embedded probe's packaged photographs, 128×128 float RGB, as texture sources."""
    from PIL import Image

    from ..probe import center_square, packaged_photographs

    photos = packaged_photographs()
    return tuple(
        center_square(Image.fromarray(photos[k]), 128).astype(np.float32) / 255
        for k in sorted(photos)
    )


def _texture(rng: np.random.Generator, kind: str, colour: np.ndarray) -> np.ndarray:
    """An (S, S, 3) albedo in screen space: flat, stripes, checks, or a photo patch."""
    s = SIZE
    if kind == "photo":
        photos = _photos()
        p = photos[rng.integers(len(photos))]
        top, left = rng.integers(0, 128 - s + 1, size=2)
        patch = p[top : top + s, left : left + s]
        if rng.random() < 0.5:  # tinted luminance, or the photo's own colours
            lum = patch @ np.array([0.299, 0.587, 0.114], np.float32)
            patch = colour * (0.5 + lum[..., None])
        return np.clip(patch, 0, 1)
    if kind == "flat":
        return np.broadcast_to(colour, (s, s, 3)).copy()
    v, u = np.mgrid[0:s, 0:s].astype(np.float32)
    period = rng.uniform(4, 12)
    angle = rng.uniform(0, np.pi)
    t = u * np.cos(angle) + v * np.sin(angle)
    if kind == "stripes":
        m = (np.sin(2 * np.pi * t / period) > 0).astype(np.float32)
    else:  # checks
        t2 = -u * np.sin(angle) + v * np.cos(angle)
        m = ((np.floor(t / period) + np.floor(t2 / period)) % 2).astype(np.float32)
    other = rng.uniform(0.1, 0.9, 3).astype(np.float32)
    return m[..., None] * colour + (1 - m[..., None]) * other


def _object_surface(
    cls: int, x: float, z: float, s: float, h0: float, u: np.ndarray, v: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mask, depth and normals (x right, y up, z to camera) of one object standing on the floor
    at world (x, 0, z) with half-size s; camera at height 1, focal length S, horizon row h0."""
    f, c = float(SIZE), SIZE / 2
    depth = np.full(u.shape, np.inf, np.float32)
    normal = np.zeros((*u.shape, 3), np.float32)

    def put(mask: np.ndarray, d: np.ndarray, n: np.ndarray) -> None:
        closer = mask & (d < depth)
        depth[closer] = d[closer]
        normal[closer] = n[closer] if n.ndim == 3 else n

    if cls == 0:  # sphere of radius s, centre at height s
        rp = f * s / z
        cx, cy = c + f * x / z, h0 + f * (1 - s) / z
        dx, dy = (u - cx) / rp, (v - cy) / rp
        r2 = dx * dx + dy * dy
        nz = np.sqrt(np.clip(1 - r2, 0, 1))
        put(r2 < 1, z - s * nz, np.stack([dx, -dy, nz], -1))
    elif cls == 1:  # box of half-size s: front face and (seen from above) top face
        zf, top = z - s, 2 * s
        front = (
            (np.abs(u - (c + f * x / zf)) < f * s / zf)
            & (v > h0 + f * (1 - top) / zf)
            & (v < h0 + f / zf)
        )
        put(front, np.full(u.shape, zf, np.float32), np.array([0, 0, 1], np.float32))
        with np.errstate(divide="ignore", invalid="ignore"):
            zt = np.where(v > h0, f * (1 - top) / (v - h0), np.inf)
        inside = (zt > zf) & (zt < z + s) & (np.abs(u - (c + f * x / zt)) < f * s / zt)
        put(inside, zt.astype(np.float32), np.array([0, 1, 0], np.float32))
    elif cls == 2:  # cylinder of radius s, height 2.4 s: body and top cap
        hgt = 2.4 * s
        rp = f * s / z
        cx = c + f * x / z
        dx = (u - cx) / rp
        nz = np.sqrt(np.clip(1 - dx * dx, 0, 1))
        vt, vb = h0 + f * (1 - hgt) / z, h0 + f / z
        body = (np.abs(dx) < 1) & (v > vt) & (v < vb)
        put(body, z - s * nz, np.stack([dx, np.zeros_like(dx), nz], -1))
        b = 0.5 * f * (1 - hgt) * (1 / (z - s) - 1 / (z + s))
        ey = (v - vt) / max(b, 1e-3)
        cap = dx * dx + ey * ey < 1
        put(cap, (z - s * ey).astype(np.float32), np.array([0, 1, 0], np.float32))
    else:  # cone of base radius s, height 2.2 s
        hgt = 2.2 * s
        cx = c + f * x / z
        va, vb = h0 + f * (1 - hgt) / z, h0 + f / z
        frac = np.clip((v - va) / max(vb - va, 1e-3), 0, 1)
        half = f * s / z * frac
        with np.errstate(divide="ignore", invalid="ignore"):
            dx = np.where(half > 0, (u - cx) / half, 2.0)
        nz = np.sqrt(np.clip(1 - dx * dx, 0, 1))
        slope = np.arctan2(s, hgt)
        n = np.stack([dx * np.cos(slope), np.full_like(dx, np.sin(slope)), nz * np.cos(slope)], -1)
        n /= np.linalg.norm(n, axis=-1, keepdims=True) + 1e-8
        put((np.abs(dx) < 1) & (v > va) & (v < vb), z - s * frac * nz, n)
    return np.isfinite(depth), depth, normal


def _render(rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    """One scene: float image and full-resolution ground truth, or None to redraw."""
    s = SIZE
    v, u = np.mgrid[0:s, 0:s].astype(np.float32) + 0.5
    h0 = rng.uniform(0.25, 0.45) * s
    zw = rng.uniform(6, 10)
    kinds = ("flat", "stripes", "checks", "photo")
    with np.errstate(divide="ignore"):
        zfloor = np.where(v > h0, s / (v - h0), np.inf)
    wall = zfloor >= zw
    depth = np.where(wall, zw, zfloor).astype(np.float32)
    normal = np.where(wall[..., None], np.float32([0, 0, 1]), np.float32([0, 1, 0]))
    seg = np.where(wall, 0, 1).astype(np.int64)
    ids = np.where(wall, 0, 1)
    albedo = np.where(
        wall[..., None],
        _texture(rng, kinds[rng.integers(4)], rng.uniform(0.3, 0.9, 3)),
        _texture(rng, kinds[rng.integers(4)], rng.uniform(0.2, 0.8, 3)),
    )
    n_obj = int(rng.integers(1, 5))
    for k in range(n_obj):
        cls = int(rng.integers(N_CLASSES))
        size = rng.uniform(0.25, 0.6)
        z = 2.2 + (zw - 3.2) * rng.random() ** 2  # nearer objects more often
        x = rng.uniform(-1, 1) * (0.45 * z - size)
        mask, d, n = _object_surface(cls, x, z, size, h0, u, v)
        closer = mask & (d < depth)
        depth[closer], normal[closer] = d[closer], n[closer]
        seg[closer], ids[closer] = 2 + cls, 2 + k
        tex = _texture(rng, kinds[rng.integers(4)], rng.uniform(0.2, 1.0, 3))
        albedo[closer] = tex[closer]
    areas = np.array([(ids == 2 + k).sum() for k in range(n_obj)])
    if (areas < 12).any():
        return None  # an object hidden behind another or too small to see
    light = np.array([rng.uniform(-1, 1), rng.uniform(0.3, 1.2), rng.uniform(0.3, 1.0)])
    light /= np.linalg.norm(light)
    ambient = rng.uniform(0.15, 0.4)
    shade = ambient + (1 - ambient) * np.clip(normal @ light, 0, None)
    image = np.clip(albedo * shade[..., None] * rng.uniform(0.8, 1.2), 0, 1)
    image = np.clip(image + rng.normal(0, 0.01, image.shape), 0, 1)
    truth = {
        "depth": depth,
        "normals": normal,
        "ids": ids,
        "segment_semantic": seg,
        "reshading": 0.2 + 0.8 * np.clip(normal @ _FIXED_LIGHT, 0, None),
    }
    return image, truth


def _half(a: np.ndarray) -> np.ndarray:
    """(..., S, S) -> (..., S/4, S/4) by 4×4 mean: the dense targets' resolution."""
    k = SIZE // DENSE
    return a.reshape(*a.shape[:-2], DENSE, k, DENSE, k).mean((-3, -1))


def _image_edges(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sobel magnitude and positive Harris response (σ = 1.5) of one gray image."""
    gx, gy = ndimage.sobel(gray, 1), ndimage.sobel(gray, 0)
    sxx = ndimage.gaussian_filter(gx * gx, 1.5)
    syy = ndimage.gaussian_filter(gy * gy, 1.5)
    sxy = ndimage.gaussian_filter(gx * gy, 1.5)
    harris = np.clip(sxx * syy - sxy * sxy - 0.05 * (sxx + syy) ** 2, 0, None)
    return np.hypot(gx, gy) / 4, np.sqrt(harris)


def _add_to_pixels(out: np.ndarray, pairs: np.ndarray, axis: int) -> None:
    """Add values between neighbours along `axis` (one shorter there) to both pixels of each pair,
    in place (for booleans: or)."""
    idx = [slice(None)] * out.ndim
    idx[axis] = slice(1, None)
    out[tuple(idx)] += pairs
    idx[axis] = slice(None, -1)
    out[tuple(idx)] += pairs


def _curvature(normals: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """|∇n| between neighbouring pixels of the same surface (0 across a surface boundary)."""
    out = np.zeros(ids.shape, np.float32)
    for ax in (0, 1):
        d = np.linalg.norm(np.diff(normals, axis=ax), axis=-1) * (np.diff(ids, axis=ax) == 0)
        _add_to_pixels(out, d / 2, ax)
    return out * 4


def generate(n: int, seed: int) -> Scenes:
    """n scenes from `seed` (independent streams per seed: train, transfer and probe sets differ)."""
    rng = np.random.default_rng([seed, 2019])
    images = np.empty((n, SIZE, SIZE, 3), np.uint8)
    h = DENSE
    t = {
        "depth": np.empty((n, 1, h, h), np.float32),
        "normals": np.empty((n, 3, h, h), np.float32),
        "reshading": np.empty((n, 1, h, h), np.float32),
        "edge_occlusion": np.empty((n, 1, h, h), np.float32),
        "edge_texture": np.empty((n, 1, h, h), np.float32),
        "keypoints2d": np.empty((n, 1, h, h), np.float32),
        "segment_semantic": np.empty((n, h, h), np.int64),
        "keypoints3d": np.empty((n, 1, h, h), np.float32),
        "curvature": np.empty((n, 1, h, h), np.float32),
    }
    i = 0
    while i < n:
        out = _render(rng)
        if out is None:
            continue
        image, g = out
        img8 = np.round(image * 255).astype(np.uint8)
        images[i] = img8
        logd = (np.log(np.clip(g["depth"], _ZMIN, _ZMAX)) - np.log(_ZMIN)) / np.log(_ZMAX / _ZMIN)
        t["depth"][i, 0] = _half(logd)
        t["normals"][i] = _half(np.moveaxis(g["normals"], -1, 0))
        t["reshading"][i, 0] = _half(g["reshading"])
        ld = np.log(g["depth"])
        jump = np.zeros(ld.shape, bool)
        for ax in (0, 1):  # a surface ends in front of another: ids differ and depth jumps
            e = (np.diff(g["ids"], axis=ax) != 0) & (np.abs(np.diff(ld, axis=ax)) > 0.02)
            _add_to_pixels(jump, e, ax)
        t["edge_occlusion"][i, 0] = _half(jump.astype(np.float32))
        sob, har = _image_edges(img8.astype(np.float32) @ np.float32([0.299, 0.587, 0.114]) / 255)
        t["edge_texture"][i, 0] = _half(sob)
        t["keypoints2d"][i, 0] = _half(har) * 20
        t["segment_semantic"][i] = g["segment_semantic"][2::4, 2::4]
        t["keypoints3d"][i, 0] = _half(_image_edges(logd)[1]) * 10
        t["curvature"][i, 0] = _half(_curvature(g["normals"], g["ids"]))
        i += 1
    image_targets = _half(np.moveaxis(images.astype(np.float32) / 255, -1, 1))
    for name in ("autoencoder", "denoise", "colorization"):
        t[name] = image_targets
    return Scenes(images, t, seed)
