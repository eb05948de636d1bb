"""Labelled target tasks for measured transfer: a folder of labelled images, or a teacher model.

Folder layouts:

* one subfolder per class (image-level classification), at least two classes and two images each;
* images with a ``.npy`` of the same stem beside them: a scalar or vector (image-level regression),
  an (H, W) integer map (dense class ids), or an (H, W) / (H, W, C) float map (dense regression).
  Dense maps are cropped like their image (centre square) and, when larger than
  :data:`MAX_DENSE`, resized to it (area mean; nearest for class ids).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import OnnxAttrError
from ..probe import EXTENSIONS, center_square, find_images

KINDS = ("image_cls", "image_reg", "dense_cls", "dense_reg")
MAX_DENSE = 64


@dataclass
class TargetTask:
    """Images (N, S, S, 3) uint8 and their labels; ``kind`` says how the head is fitted.

    image_cls: y (N,) int class ids; image_reg: y (N, K) float; dense_cls: y (N, R, R) int;
    dense_reg: y (N, C, R, R) float.
    """

    name: str
    images: np.ndarray
    y: np.ndarray
    kind: str
    classes: list[str] = field(default_factory=list)
    source: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise OnnxAttrError(f"unknown target kind {self.kind!r}; one of {', '.join(KINDS)}")
        if len(self.images) != len(self.y):
            raise OnnxAttrError(
                f"target {self.name!r}: {len(self.images)} images but {len(self.y)} labels"
            )
        if len(self.images) < 10:
            raise OnnxAttrError(
                f"target {self.name!r} has {len(self.images)} labelled images; "
                "measured transfer needs at least 10 (train/validation/test)"
            )
        if self.kind == "image_cls":
            self.check_classes(self.name, self.y, self.classes)
        elif not np.isfinite(self.y).all():
            raise OnnxAttrError(f"target {self.name!r} has NaN/inf labels; fix the .npy files")

    @staticmethod
    def check_classes(name: str, y: np.ndarray, classes: list[str]) -> None:
        """At least two classes, and no class with a single image."""
        counts = np.bincount(y)
        one = [classes[i] if i < len(classes) else str(i) for i, c in enumerate(counts) if c == 1]
        if one:
            raise OnnxAttrError(
                f"class {one[0]!r} of target {name!r} has only one image; every "
                "class needs at least two (one to fit, one to test)"
            )
        if (counts > 0).sum() < 2:
            raise OnnxAttrError(
                f"target {name!r} has a single class; classification needs at least two"
            )

    @property
    def dense(self) -> bool:
        return self.kind.startswith("dense")

    @property
    def n_outputs(self) -> int:
        """Classes (classification) or channels/values (regression)."""
        if self.kind.endswith("cls"):
            return max(len(self.classes), int(self.y.max()) + 1)
        return int(self.y.shape[1])

    @property
    def images_digest(self) -> str:
        return hashlib.sha256(np.ascontiguousarray(self.images).tobytes()).hexdigest()

    @property
    def digest(self) -> str:
        """Identifies images + labels + kind: the cache key of measured transfer scores."""
        h = hashlib.sha256(self.images_digest.encode())
        h.update(self.kind.encode())
        h.update(str(self.y.dtype).encode() + str(self.y.shape).encode())
        h.update(np.ascontiguousarray(self.y).tobytes())
        return h.hexdigest()

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "n": len(self.images),
            "label_shape": list(self.y.shape[1:]),
            "classes": self.classes,
            "source": self.source,
            "digest": self.digest,
        }


def _square(a: np.ndarray) -> np.ndarray:
    h, w = a.shape[:2]
    s = min(h, w)
    return a[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]


def _resize_dense(a: np.ndarray, size: int, classes: bool) -> np.ndarray:
    """(R, R[, C]) -> (size, size[, C]): area mean, or nearest for class ids."""
    if a.shape[0] <= size:
        return a
    if classes:
        idx = (np.arange(size) * a.shape[0] / size + a.shape[0] / size / 2).astype(int)
        return a[idx][:, idx]
    import torch
    import torch.nn.functional as F

    t = torch.as_tensor(a, dtype=torch.float32)
    t = t[None, None] if t.dim() == 2 else t.permute(2, 0, 1)[None]
    out = F.adaptive_avg_pool2d(t, size)[0]
    return (out[0] if a.ndim == 2 else out.permute(1, 2, 0)).numpy()


def _read_image(path: Path, size: int) -> np.ndarray:
    try:
        with Image.open(path) as img:
            return center_square(img, size)
    except Exception as exc:  # PIL raises many types for broken files
        raise OnnxAttrError(f"cannot read image {path}: {exc}") from None


def load_folder(
    root: str | Path,
    size: int,
    name: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> TargetTask:
    """A target from a folder: class subfolders, or images with a `.npy` label each."""
    root = Path(root)
    if not root.is_dir():
        raise OnnxAttrError(f"{root}: not a folder; give a folder of labelled images")
    name = name or root.name
    paths = find_images(root)
    if not paths:
        raise OnnxAttrError(f"no images ({', '.join(sorted(EXTENSIONS))}) under {root}")
    with_npy = [p for p in paths if p.with_suffix(".npy").is_file()]
    if with_npy:
        missing = [p for p in paths if not p.with_suffix(".npy").is_file()]
        if missing:
            raise OnnxAttrError(
                f"{len(missing)} of {len(paths)} images under {root} have no label "
                f"(e.g. {missing[0].relative_to(root)} needs {missing[0].with_suffix('.npy').name})"
            )
        return _npy_target(root, paths, size, name)
    classes = sorted(
        {p.relative_to(root).parts[0] for p in paths if len(p.relative_to(root).parts) > 1}
    )
    loose = [p for p in paths if len(p.relative_to(root).parts) == 1]
    if not classes or loose:
        raise OnnxAttrError(
            f"images under {root} have no labels: put them in one subfolder per class, or give "
            f"each image a .npy label of the same name (e.g. {paths[0].stem}.npy)"
        )
    y = np.array([classes.index(p.relative_to(root).parts[0]) for p in paths], np.int64)
    TargetTask.check_classes(name, y, classes)  # before reading any image
    if progress:
        progress(f"reading {len(paths)} images of {len(classes)} classes from {root}")
    images = np.stack([_read_image(p, size) for p in paths])
    return TargetTask(name, images, y, "image_cls", classes, source=str(root))


def _npy_target(root: Path, paths: list[Path], size: int, name: str) -> TargetTask:
    labels = []
    for p in paths:
        try:
            labels.append(np.load(p.with_suffix(".npy"), allow_pickle=False))
        except (OSError, ValueError) as exc:
            raise OnnxAttrError(f"cannot read label {p.with_suffix('.npy')}: {exc}") from None
    shapes = {a.shape for a in labels}
    first = labels[0]
    if first.ndim <= 1:  # image-level regression
        if len(shapes) != 1:
            raise OnnxAttrError(
                f"labels under {root} have different shapes {sorted(shapes)}; "
                "image-level labels must all have the same length"
            )
        y = np.stack([np.atleast_1d(a).astype(np.float32) for a in labels])
        kind = "image_reg"
    else:
        if first.ndim > 3:
            raise OnnxAttrError(
                f"label {paths[0].with_suffix('.npy').name} has shape {first.shape}; "
                "dense labels are (H, W) or (H, W, C)"
            )
        classes = np.issubdtype(first.dtype, np.integer) or first.dtype == bool
        maps = []
        for p, a in zip(paths, labels):
            with Image.open(p) as img:
                w, h = img.size
            if a.ndim != first.ndim or (a.ndim == 3 and a.shape[2] != first.shape[2]):
                raise OnnxAttrError(
                    f"label {p.with_suffix('.npy').name} has shape {a.shape}, "
                    f"others {first.shape}; dense labels must agree in channels"
                )
            if abs(a.shape[0] / a.shape[1] - h / w) > 0.02:
                raise OnnxAttrError(
                    f"label {p.with_suffix('.npy').name} is {a.shape[0]}x{a.shape[1]} but its "
                    f"image is {h}x{w}; a dense label must have the image's aspect ratio"
                )
            maps.append(_square(a))
        side = min(min(m.shape[0] for m in maps), MAX_DENSE)
        maps = [_resize_dense(m, side, classes) for m in maps]
        if len({m.shape for m in maps}) != 1:
            raise OnnxAttrError(
                f"dense labels under {root} differ in size after cropping "
                f"({sorted({m.shape for m in maps})}); give maps of one size"
            )
        if classes:
            y = np.stack(maps).astype(np.int64)
            if y.min() < 0:
                raise OnnxAttrError("dense class-id labels must be >= 0")
            kind = "dense_cls"
        else:
            y = np.stack([m[None] if m.ndim == 2 else np.moveaxis(m, 2, 0) for m in maps])
            y, kind = y.astype(np.float32), "dense_reg"
    images = np.stack([_read_image(p, size) for p in paths])
    return TargetTask(name, images, y, kind, source=str(root))


def teacher_target(
    root: str | Path,
    teacher: str | Path,
    node: str | None,
    size: int,
    preprocessing: dict[str, Any] | None = None,
    name: str | None = None,
    batch_size: int = 32,
) -> TargetTask:
    """A target whose labels are a teacher model's outputs at ``node`` on the folder's images
    (a spatial output is a dense regression target, anything else an image-level one)."""
    from ..probe import build_probe
    from .sources import EncoderRunner

    root = Path(root)
    if not root.is_dir():
        raise OnnxAttrError(f"{root}: not a folder of images")
    probe = build_probe(root, size=size)
    runner = EncoderRunner.from_file(teacher, node, preprocessing)
    out = runner.run(probe.images, batch_size)
    if out.ndim == 4:
        y = (
            out[:, :, :MAX_DENSE, :MAX_DENSE]
            if out.shape[-1] <= MAX_DENSE
            else np.stack(
                [
                    np.moveaxis(_resize_dense(np.moveaxis(o, 0, 2), MAX_DENSE, False), 2, 0)
                    for o in out
                ]
            )
        )
        kind = "dense_reg"
    else:
        y, kind = out.reshape(len(out), -1), "image_reg"
    return TargetTask(
        name or f"{Path(teacher).stem}.{node or 'output'}",
        probe.images,
        y.astype(np.float32),
        kind,
        source=json.dumps({"teacher": str(teacher), "node": node, "images": str(root)}),
    )
