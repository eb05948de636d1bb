"""Approximate map affinities for large spaces: per-image random-projection sketches.

`add` stores, beside each model's maps, a sketch of every probe image's unit-normalised map x:
y = sqrt(d/k) · P_i · DCT(D_i · x), a subsampled randomized orthogonal transform (SRHT with a DCT):
D_i flips the signs of the d = S² pixels at random, the orthonormal 2-D DCT spreads every map's
energy over all coefficients, and P_i keeps k of them. D_i and P_i are drawn from a fixed seed
and *the probe image's index* i, so every model of every space shares them for image i, while
different images get independent projections: the sketch errors of the Np images of one affinity
do not add up (one matrix shared by all images made them correlated on real maps — Spearman with
the exact ranks 0.95 instead of 0.98 at k = 256, benchmarks/bench_sketch.py).

<y_a, y_b> estimates cos(x_a, x_b) without bias; its error is that of sampling k of d
coordinates without replacement, below the Johnson–Lindenstrauss bound of a Gaussian projection
(per image |error| <= ε with probability >= 1 - 4·exp(-k(ε² - ε³)/4)), and the affinity, a mean
over Np images, averages the independent errors down by sqrt(Np). The coefficients are kept in
a random order, so the first k' of them are a sketch of k' dimensions: ``sketch_dims`` trades
accuracy for speed without recomputing. With k >= d the sketch is the whole (orthogonal)
transform and the cosines are exact.

Stored like maps (:class:`onnxattr.space.MapStorage`): each row divided by its largest |value|
(the estimator normalises rows, so no factor is kept), 3 mantissa bits of float16, Blosc2 —
~1.3 bytes per dimension; the rounding (relative error <= 2^-4 per coordinate, independent across
coordinates) adds far less than the sketch's own error. `add` stores them where they pay: maps of
at least ``SKETCH_MIN_RATIO`` · k pixels (128² for k = 1024), where they are >= 16x smaller than
the maps; for smaller maps `onnxattr sketch SPACE` adds them on demand.

The estimator ``sketch:<method>`` reads k numbers per image instead of S²: for 224² maps and the
default k = 1024, 49x fewer. Its rank agreement with the exact path and its speed are measured by
benchmarks/bench_sketch.py (benchmark space) and benchmarks/bench_growth.py (simulated spaces).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.fft import dctn

from ..errors import OnnxAttrError
from ..space import MapStorage
from ..space_reader import SpaceReader
from .distances import normalise_rows

#: Stored dimensions per image (the estimator may read fewer, see ``sketch_dims``).
SKETCH_DIM = 1024
#: Fixed: sketches of different adds and spaces must share their projections.
SKETCH_SEED = 20191208
SKETCH_GROUP = "sketch"
#: `add` stores sketches of maps with at least this many times SKETCH_DIM pixels.
SKETCH_MIN_RATIO = 16
SKETCH_STORAGE = MapStorage("float16", 3, "blosc2")


def sketch_dims_for(n_pixels: int) -> int:
    """How many sketch dimensions `add` stores for maps of ``n_pixels`` (0: none)."""
    return SKETCH_DIM if n_pixels >= SKETCH_MIN_RATIO * SKETCH_DIM else 0


def _projection(index: int, d: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Image ``index``'s sign flips (d,) and kept coefficients (k,), the same everywhere."""
    rng = np.random.default_rng([SKETCH_SEED, d, index])
    signs = rng.integers(0, 2, d, dtype=np.int8) * np.int8(2) - np.int8(1)
    return signs.astype(np.float32), rng.permutation(d)[:k]


def sketch_maps(maps: np.ndarray, start: int = 0, k: int = SKETCH_DIM) -> np.ndarray:
    """(n, S, S) maps of probe images start..start+n-1 -> (n, min(k, S²)) float16 sketches of
    their unit-normalised versions as stored (rows scaled to [-1, 1], 3 mantissa bits; a zero
    map gives a zero sketch)."""
    maps = np.asarray(maps, dtype=np.float32)
    n, shape = len(maps), maps.shape[1:]
    d = math.prod(shape)
    k = min(k, d)
    unit = normalise_rows(maps)
    out = np.empty((n, 1, k), dtype=np.float32)
    for i in range(n):
        signs, keep = _projection(start + i, d, k)
        out[i, 0] = dctn((unit[i] * signs).reshape(shape), norm="ortho").ravel()[keep]
    return SKETCH_STORAGE.encode(out)[0][:, 0]


class MapSketch:
    """``sketch:<method>``: mean over probe images of the cosines of the stored sketches
    (pairwise engine: cached, incremental). ``dims``: how many of the stored dimensions to use
    (0 = all)."""

    def __init__(self, method: str, dims: int = 0) -> None:
        if dims < 0:
            raise OnnxAttrError(f"sketch_dims={dims}: give a positive number (0 = all stored)")
        self.method = method
        self.dims = dims
        self.name = f"sketch:{method}" + (f"@{dims}" if dims else "")
        self.cache_key = f"sketch.{method}.k{dims or 'all'}"
        self.params = {"method": method, "dims": dims or "all", "seed": SKETCH_SEED}
        self.missing_hint = (
            "`add` stores sketches of maps from 128x128 up; for smaller maps or older spaces "
            "`onnxattr sketch SPACE` computes them from the stored maps"
        )

    def n_images(self, reader: SpaceReader, name: str) -> int:
        return reader.sketch_shape(name, self.method)[0]

    def verify(self, reader: SpaceReader, name: str) -> None:
        reader.verify_sketch(name, self.method)

    def models_with_data(self, reader: SpaceReader) -> list[str]:
        return [m for m in reader.names() if reader.has_sketch(m, self.method)]

    def _k(self, reader: SpaceReader, names: Sequence[str]) -> int:
        shapes = {reader.sketch_shape(n, self.method) for n in names}
        if len(shapes) != 1:
            raise OnnxAttrError(
                f"sketches of {self.method!r} differ in shape ({shapes}); all "
                "models must be attributed on the same probe set and map size"
            )
        stored = next(iter(shapes))[1]
        if self.dims > stored:
            raise OnnxAttrError(
                f"sketch_dims={self.dims}, but the space's sketches have "
                f"{stored} dimensions; give at most {stored}"
            )
        return self.dims or stored

    def parts(self, reader: SpaceReader, names: Sequence[str], memory_bytes: int) -> list[int]:
        return [self._k(reader, names)]

    def signature_bytes(self, reader: SpaceReader, name: str, part: int) -> int:
        return self.n_images(reader, name) * part * 4

    def stack(self, reader: SpaceReader, names: Sequence[str], part: int) -> np.ndarray:
        """(models, Np·k) float32: each image's sketch over its own norm (less variance than
        the map's norm it estimates) / sqrt(Np)."""
        rows = []
        for name in names:
            y = normalise_rows(reader.sketch(name, self.method, part))
            rows.append((y / np.float32(math.sqrt(len(y)))).ravel())
        return np.stack(rows)

    def combine(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a @ (a.T if b is a else b.T)).astype(np.float64)


def add_sketches(
    space: str | Path,
    methods: Sequence[str] | None = None,
    dims: int = SKETCH_DIM,
    chunk: int = 64,
) -> dict[str, list[str]]:
    """Store the sketches (``dims`` dimensions) that models of ``space`` lack: models added
    before `add` stored them, or with maps too small for `add` to store them by default.
    Computed from the stored maps (verified against their checksum first), ``chunk`` images at a
    time; returns model -> methods sketched."""
    from ..space import ModelSpace
    from ..space_reader import read_space

    if dims < 1:
        raise OnnxAttrError(f"sketch dims={dims}: give at least 1 (default {SKETCH_DIM})")
    done: dict[str, list[str]] = {}
    for name in ModelSpace(space).model_names():
        sketches = {}
        with read_space(space) as reader:
            for method in reader.methods(name):
                if (methods and method not in methods) or reader.has_sketch(name, method):
                    continue
                reader.verify_maps(name, method)  # the scale per image does not matter: unit
                n = reader.map_shape(name, method)[0]
                sketches[method] = np.concatenate([
                    sketch_maps(reader.stored_maps(name, method, slice(i, i + chunk)), i, dims)
                    for i in range(0, n, chunk)])
        if sketches:  # a new segment for the model, with its sketches added
            ModelSpace(space).add_sketches(name, sketches)
            done[name] = list(sketches)
    return done
