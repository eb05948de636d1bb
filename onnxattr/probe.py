"""Stage 1: the probe set — the same unlabeled images for every model.

Images are centre-cropped, resized to S×S and stored once as uint8 RGB, with their relative names
and content hashes. With no folder, a deterministic default is built from real photographs that
ship inside two required dependencies (scikit-image, matplotlib), so `add` needs no set-up and the
default is the same on every machine (its digest is checked by the tests).
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .errors import OnnxAttrError

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass
class ProbeSet:
    images: np.ndarray  # (Np, S, S, 3) uint8 RGB
    names: list[str]
    source: str
    seed: int
    hashes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.hashes:
            self.hashes = [hashlib.sha256(im.tobytes()).hexdigest() for im in self.images]

    @property
    def size(self) -> int:
        return int(self.images.shape[1])

    def __len__(self) -> int:
        return len(self.images)

    @property
    def digest(self) -> str:
        """One hash of the whole set, so spaces built from the same probe can be recognised."""
        return hashlib.sha256("".join(self.hashes).encode()).hexdigest()


def display_name(name: str) -> str:
    """A file name as valid UTF-8: bytes that are not (POSIX names are arbitrary bytes) become
    \\xNN escapes, so the name is still unique and readable."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def find_images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB of any PIL mode: 16/32-bit and float greys scaled from their full range (PIL's
    own convert clips them to white), transparency composited over white, CMYK/palette/LAB via
    PIL, the EXIF orientation applied."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16") or (img.mode == "I" and a.max(initial=0) > 255):
            a = a / 257.0  # 16-bit range (PNG stores 16-bit greys as mode I)
        elif img.mode == "F" and a.size and a.max() <= 1.0:
            a = a * 255.0  # float images in [0, 1]
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode == "P" and "transparency" in img.info
    ):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def center_square(img: Image.Image, size: int) -> np.ndarray:
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    img = to_rgb(img).crop((left, top, left + s, top + s))
    return np.asarray(img.resize((size, size), Image.Resampling.BICUBIC), dtype=np.uint8)


def build_probe(
    source: str | Path | None = None, size: int = 224, n: int | None = None, seed: int = 0,
    progress: Callable[[Iterator], Iterator] | None = None,
) -> ProbeSet:
    """A probe set from a folder (recursively), or the embedded default when `source` is None."""
    if size < 8:
        raise OnnxAttrError(f"`size={size}` is too small; use at least 8 pixels")
    if source is None:
        return embedded_probe(size=size, n=300 if n is None else n, seed=seed)
    root = Path(source)
    if not root.is_dir():
        raise OnnxAttrError(f"{root}: not a folder of images")
    paths = find_images(root)
    if not paths:
        raise OnnxAttrError(
            f"no images ({', '.join(sorted(EXTENSIONS))}) found under {root}; point at a folder of photos"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(paths))
    images, names = [], []
    it: Iterator = iter(order)
    if progress is not None:
        it = progress(it)
    for i in it:
        if n is not None and len(images) >= n:
            break
        try:
            with Image.open(paths[i]) as img:
                images.append(center_square(img, size))
        except Exception as exc:  # PIL raises many types for broken files
            warnings.warn(f"skipping unreadable image {display_name(str(paths[i]))}: {exc}",
                          stacklevel=2)
            continue
        names.append(display_name(paths[i].relative_to(root).as_posix()))
    if not images:
        raise OnnxAttrError(f"none of the {len(paths)} image files under {root} could be read")
    return ProbeSet(np.stack(images), names, source=str(root.resolve()), seed=seed)


#: The photographs of the embedded default, from onnxattr's *required* dependencies only, so the
#: default probe set is the same on every machine whatever else is installed. (Optional packages
#: such as scikit-learn also ship photographs; using them made the set depend on the environment.)
EMBEDDED_SKIMAGE = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina",
                    "camera", "moon", "coins", "brick", "grass", "gravel")
EMBEDDED_MATPLOTLIB = ("grace_hopper.jpg",)


#: Digests of the embedded default as the CLI builds it (`demo`: 224 px, 64 images; `probe build`
#: and `add` on an empty space: 224 px, 300 images; seed 0), checked by the tests and compared
#: with a space's stored digest: a mismatch means the set was built from other photographs.
EMBEDDED_DIGESTS: dict[tuple[int, int, int], str] = {
    (224, 64, 0): "3bd2c55b8a87df873b2190f729be0b6fa314d333d14f963bee9157a07f72e360",
    (224, 300, 0): "9409d4d7baebe5636f23c2a986bbee9cf3312a6f3f9f188afa7967ab2c4ca41c",
}


def embedded_mismatch(probe: ProbeSet) -> str | None:
    """Why an embedded probe set differs from this version's default of the same size, n and seed
    (None when it is the same or is not an embedded default)."""
    want = EMBEDDED_DIGESTS.get((probe.size, len(probe), probe.seed))
    if probe.source != "embedded" or want is None or probe.digest == want:
        return None
    return (
        f"this space's embedded probe set ({len(probe)} images of {probe.size} px, seed "
        f"{probe.seed}) differs from this onnxattr's default (digest {probe.digest[:12]} vs "
        f"{want[:12]}): it was built by an older version or from other photographs, so its maps "
        "do not compare with spaces built now; within the space they still do"
    )


def packaged_photographs() -> dict[str, np.ndarray]:
    """Real photographs shipped inside scikit-image and matplotlib wheels (nothing is downloaded)."""
    try:
        from matplotlib import cbook
        from skimage import data
    except ImportError as exc:
        raise OnnxAttrError(
            f"the default probe set needs scikit-image and matplotlib ({exc}); "
            "`pip install scikit-image matplotlib` or pass a folder: `onnxattr probe build DIR`"
        ) from None
    # Only images inside the skimage wheel: others would be fetched from the internet.
    photos = {f"skimage/{name}": _rgb(getattr(data, name)()) for name in EMBEDDED_SKIMAGE}
    for fname in EMBEDDED_MATPLOTLIB:
        with cbook.get_sample_data(fname) as f:
            photos[f"matplotlib/{Path(fname).stem}"] = np.asarray(Image.open(f).convert("RGB"))
    return photos


def _rgb(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype != np.uint8:
        a = (255 * (a - a.min()) / max(float(np.ptp(a)), 1e-12)).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    return a[..., :3]


def embedded_probe(size: int = 224, n: int = 300, seed: int = 0) -> ProbeSet:
    """n deterministic random crops (10–100 % of the area, aspect 3/4–4/3, random flips) of the photos."""
    photos = packaged_photographs()
    keys = sorted(photos)
    rng = np.random.default_rng(seed)
    images, names = [], []
    for k in range(n):
        key = keys[k % len(keys)] if k < len(keys) else keys[rng.integers(len(keys))]
        img = photos[key]
        h, w = img.shape[:2]
        area = rng.uniform(0.1, 1.0) * h * w
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        ch = int(min(h, max(8, round(np.sqrt(area / aspect)))))
        cw = int(min(w, max(8, round(np.sqrt(area * aspect)))))
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = Image.fromarray(img[top:top + ch, left:left + cw])
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        images.append(center_square(crop, size))
        names.append(f"{key}#crop{k}")
    return ProbeSet(np.stack(images), names, source="embedded", seed=seed)
