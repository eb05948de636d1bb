"""Stage 4: the model space — an index file readable with plain h5py (layout in the README).
Longer than 600 lines because the writer, its lock, the format checks and the layout contract
they share change together: split apart, a layout change could reach one side and not the other.

Format 3 stores each model, the probe set and each pairwise-cache entry as an immutable segment
file, linked from a small index that every write replaces whole (:mod:`.segments`); writes are
all-or-nothing at the level of one change, and a failed or interrupted one leaves the space exactly
as it was. Formats 1-2 (everything in one file) are read as before and written no more:
`onnxattr migrate` converts them.

Every access holds a lock of onnxattr's own beside the space (``SPACE.lock``): shared for readers,
exclusive for the index commit of a writer (segments are written before, in parallel), so
concurrent processes never see half-written data, also where HDF5's own file locking is off
(``HDF5_USE_FILE_LOCKING=FALSE``, the usual setting on NFS). Writers wait for it up to
``ONNXATTR_LOCK_TIMEOUT`` seconds (default 600), saying so after 2 s. Every dataset carries a
``sha256`` attribute over its values as read back (independent of HDF5 filters), checked when it
is read and by ``onnxattr check``.

Maps are stored compactly since format 2 (see :class:`MapStorage`): each image's map divided by
its largest absolute value, as float16, in Blosc2/Zstd-compressed chunks of whole images (~128 KB
each: see :data:`MAP_CHUNK_BYTES`), with the per-image factors in
/models/<name>/map_scale/<method>. The cosine of two maps does not depend on those factors, so
the distance stage never reads them. Format-1 spaces (float32, no factors) stay readable.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import filelock
import h5py
import hdf5plugin
import numpy as np

from . import segments
from .errors import OnnxAttrError
from .probe import ProbeSet

FORMAT = "onnxattr-space"
FORMAT_VERSION = 3
SEGMENTED_VERSION = 3  # formats 1-2: one HDF5 file; 3: segments named by an index (segments.py)
MAP_DTYPES = ("float16", "float32")
COMPRESSIONS = ("blosc2", "zstd", "gzip", "none")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_PENDING = ".pending-"
CHECKSUM = "sha256"
_HASH_BLOCK = 64 << 20  # bytes read per step when hashing a stored dataset
# Maps are chunked by whole images, about this many bytes per chunk: HDF5's per-chunk cost
# dominated reading small maps one image per chunk (64² maps: distance 2.6x slower than float32
# without filters, 0.96x at 16 images per chunk), and a chunk this size still fits HDF5's default
# 1 MB chunk cache, so reads of a few images at a time (large spaces) decompress each chunk once.
MAP_CHUNK_BYTES = 128 << 10


def map_chunks(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """Chunk shape of a (images, H, W) map dataset: whole images, ~MAP_CHUNK_BYTES per chunk."""
    per_image = max(1, itemsize * int(np.prod(shape[1:])))
    return (max(1, min(shape[0], MAP_CHUNK_BYTES // per_image)), *shape[1:])


@dataclass(frozen=True)
class StagedModel:
    """A model's segment, written but not yet linked (see :meth:`ModelSpace.stage_model`)."""

    name: str
    segment: segments.Segment
    map_shapes: dict[str, tuple[int, ...]]  # method -> (images, H, W)


@dataclass
class ModelRecord:
    """What `list` shows of a stored model."""

    name: str
    attrs: dict[str, Any]
    methods: list[str]
    n_images: int


@dataclass(frozen=True)
class MapStorage:
    """How `add` stores attribution maps: element type, kept precision, lossless HDF5 filter.

    float16 maps are each scaled to [-1, 1] first (so small gradients do not underflow), then
    rounded to ``mantissa_bits`` of float16's 10: the relative error of a pixel is at most
    2^-(bits+1), so the cosine of a map with its stored copy is >= 1 - 2^-(2·bits+1) (default 2
    bits: 0.969 at worst, 0.9986 on the benchmark's real maps). The zeroed low bits cost nothing
    once bit-shuffled and compressed (Blosc2, Zstd codec).

    Features (float32) go through the same filter, byte-shuffled, rounded to ``feature_bits``
    mantissa bits (default: 10 with float16 maps, relative error <= 2^-11 — float16's precision
    in float32's range; 23 = lossless with float32 maps). Real attribution maps are noise-like and
    encoder features half zeros, so lossless filters alone buy little (1.2x / 2.3x). On the
    mini-Taskonomy benchmark these defaults make the file 4.2x smaller than format 1 with P@K of
    every estimator unchanged (benchmarks/bench_storage.py). ``float32`` is lossless; ``float32``
    + ``none`` is format 1.
    """

    dtype: str = "float16"
    mantissa_bits: int = 2
    compression: str = "blosc2"
    feature_bits: int | None = None  # None: 10 with float16 maps, 23 (lossless) with float32

    def __post_init__(self) -> None:
        if self.dtype not in MAP_DTYPES:
            raise OnnxAttrError(f"map dtype {self.dtype!r} is not supported; use {' or '.join(MAP_DTYPES)}")
        if self.compression not in COMPRESSIONS:
            raise OnnxAttrError(
                f"map compression {self.compression!r} is not supported; use one of {', '.join(COMPRESSIONS)}"
            )
        if not 1 <= self.mantissa_bits <= 10:
            raise OnnxAttrError(f"map precision of {self.mantissa_bits} bits is outside 1..10")
        if self.feature_bits is None:
            object.__setattr__(self, "feature_bits", 10 if self.dtype == "float16" else 23)
        if not 1 <= self.feature_bits <= 23:
            raise OnnxAttrError(f"feature precision of {self.feature_bits} bits is outside 1..23")

    def filter(self, dtype: str | None = None) -> dict[str, Any]:
        """h5py create_dataset keywords of the filter (for maps, or for data of ``dtype``)."""
        if self.compression == "blosc2":
            half = (dtype or self.dtype) == "float16"
            shuffle = hdf5plugin.Blosc2.BITSHUFFLE if half else hdf5plugin.Blosc2.SHUFFLE
            return dict(hdf5plugin.Blosc2(cname="zstd", clevel=1, filters=shuffle))
        if self.compression == "zstd":
            return {**hdf5plugin.Zstd(clevel=3), "shuffle": True}
        if self.compression == "gzip":
            return {"compression": "gzip", "compression_opts": 1, "shuffle": True}
        return {}

    def encode(self, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(stored array, per-image factors or None)."""
        maps = np.asarray(maps, dtype=np.float32)
        if self.dtype == "float32":
            return maps, None
        peak = np.abs(maps).reshape(len(maps), -1).max(axis=1)
        scale = np.where(peak > 0, peak, 1.0).astype(np.float32)
        unit = maps / scale[:, None, None]
        if self.mantissa_bits < 10:  # round once, in float32, to nearest on the kept bits
            round_mantissa(unit, self.mantissa_bits)
        half = unit.astype(np.float16)  # exact for normal float16 values (|unit| <= 1)
        return half, scale

    def encode_features(self, features: np.ndarray) -> np.ndarray:
        """Features as stored: float32, rounded to ``feature_bits`` mantissa bits."""
        out = np.array(features, dtype=np.float32)
        if self.feature_bits < 23:
            round_mantissa(out, self.feature_bits)
        return out

    def write_features(self, group: h5py.Group, name: str, features: np.ndarray) -> h5py.Dataset:
        data = self.encode_features(features)
        chunks = (min(len(data), 256), *data.shape[1:]) if data.size else None
        opts = self.filter("float32") if chunks else {}
        return group.create_dataset(name, data=data, chunks=chunks, **opts)


def round_mantissa(x: np.ndarray, bits: int) -> None:
    """Round float32 ``x`` in place to nearest on its ``bits`` leading mantissa bits (the
    others zero, which bit-shuffled compression stores for almost nothing)."""
    drop = 23 - bits
    view = x.view(np.uint32)
    view += np.uint32(1 << (drop - 1))
    view &= np.uint32(0xFFFFFFFF ^ ((1 << drop) - 1))


DEFAULT_STORAGE = MapStorage()


def check_name(name: str) -> str:
    if not _NAME.match(name) or name.startswith("."):
        raise OnnxAttrError(
            f"model name {name!r} is not allowed; use letters, digits, '_', '.', '-' (`name`)"
        )
    return name


class ModelSpace:
    """An onnxattr model space on disk. Open briefly per operation; nothing is held open."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # -- opening -------------------------------------------------------------------------
    def _open(self) -> AbstractContextManager[h5py.File]:
        return open_space(self.path)

    # -- probe ---------------------------------------------------------------------------
    def has_probe(self) -> bool:
        if not self.path.exists():
            return False
        with self._open() as f:
            return "probe" in f

    def write_probe(self, probe: ProbeSet, replace: bool = False) -> None:
        """Store the probe set (a segment of its own, linked when complete)."""
        self.check_free_space(probe.images.nbytes, "the probe set")
        if self.probe_digest() == probe.digest:
            return

        def fill(f: h5py.File, group: str) -> None:
            g = f.create_group(group)
            g.create_dataset("images", data=probe.images, chunks=(1, *probe.images.shape[1:]),
                             compression="gzip", compression_opts=4)
            str_t = h5py.string_dtype("utf-8")
            g.create_dataset("names", data=np.array(probe.names, dtype=object), dtype=str_t)
            g.create_dataset("sha256", data=np.array(probe.hashes, dtype=object), dtype=str_t)
            g.attrs.update(size=probe.size, seed=probe.seed, source=probe.source,
                           digest=probe.digest, created=_now())
            seal(g)

        def check(f: h5py.File | None) -> bool:
            if f is None:
                return True
            has_models = bool(len(f.get("models", {})))
            if "probe" in f:
                if f["probe"].attrs.get("digest") == probe.digest:
                    return False  # written meanwhile by another process
                if has_models:
                    raise OnnxAttrError(
                        f"{self.path} already holds models computed on another probe set; "
                        "use a new `space` file (maps on different probes do not compare)")
                if not replace:
                    raise OnnxAttrError(
                        f"{self.path} already has a probe set; pass `replace=True` to rebuild it")
            elif has_models:
                raise OnnxAttrError(
                    f"{self.path} holds models but no probe set (damaged or edited): their maps "
                    f"belong to another probe; `onnxattr check {self.path}`")
            return True

        self.commit_segment("probe", "", fill, check)

    def commit_segment(self, kind: str, name: str, fill: Callable[[h5py.File, str], None] | None,
                       check: Callable[[h5py.File | None], bool] = lambda f: True,
                       lock_wait: float | None = None,
                       also: Callable[[dict[str, Any]], list[segments.Change]] | None = None) -> None:
        """The one write path: write a segment (``fill(file, group)`` builds ``group``; None
        unlinks ``kind``/``name``) outside the lock, then commit it (:meth:`commit`). Tools
        that build segments by hand (tests' synthetic spaces) use it too, so they follow the
        same layout and commit."""
        seg = self.write_segment(kind, name, fill) if fill else None
        self.commit(kind, name, seg, check, lock_wait, also)

    def write_segment(self, kind: str, name: str, fill: Callable[[h5py.File, str], None]
                      ) -> segments.Segment:
        """A segment written beside the space, not yet visible (any process may write one)."""
        check_writable_path(self.path)
        try:
            return segments.write_segment(self.path, kind, name, fill)
        except segments.WriteFailed as exc:
            raise OnnxAttrError(f"{self.path}: could not write {_what(kind, name)} "
                                f"({segments.describe(exc)}); the space is unchanged: free disk "
                                "space or fix the file system and retry") from None

    def commit(self, kind: str, name: str, seg: segments.Segment | None,
               check: Callable[[h5py.File | None], bool] = lambda f: True,
               lock_wait: float | None = None,
               also: Callable[[dict[str, Any]], list[segments.Change]] | None = None,
               keep_on_failure: bool = False) -> None:
        """Under the exclusive lock, run ``check`` on the space as it is now (None for a new
        space; False: nothing to do) and make ``seg`` (None: unlink ``kind``/``name``) and
        ``also``'s changes visible in one index replace. On failure the space is as it was and
        the segment is deleted (unless ``keep_on_failure``: then the caller does)."""
        check_writable_path(self.path)
        drop = [] if keep_on_failure or seg is None else [seg]
        try:
            with space_lock(self.path, write=True, timeout=lock_wait), signals_deferred():
                with open_index(self.path) as f:
                    if not check(f):
                        segments.discard([seg] if seg else [])
                        return
                    manifest = segments.read_manifest(f) if f else segments.empty_manifest(self.path)
                    attrs = {k: f.attrs[k] for k in ("created",) if f and k in f.attrs}
                changes = [segments.Change(kind, name, seg), *(also(manifest) if also else [])]
                segments.commit_changes(self.path, manifest, changes, {
                    "format": FORMAT, "format_version": FORMAT_VERSION, "layout": segments.LAYOUT,
                    "created": attrs.get("created", _now())})
        except segments.WriteFailed as exc:
            segments.discard(drop)
            verb = "remove" if seg is None else "commit"
            raise OnnxAttrError(f"{self.path}: could not {verb} {_what(kind, name)} "
                                f"({segments.describe(exc)}); the space is unchanged: free disk "
                                "space or fix the file system and retry") from None
        except BaseException:
            segments.discard(drop)
            raise

    def read_probe(self) -> ProbeSet:
        with self._open() as f:
            if "probe" not in f:
                raise OnnxAttrError(
                    f"{self.path} has no probe set; build one with `onnxattr probe build --space {self.path}`"
                )
            g = f["probe"]
            images, names, hashes = (read_verified(g[k]) for k in ("images", "names", "sha256"))
            probe = ProbeSet(
                images=images,
                names=[s.decode() if isinstance(s, bytes) else s for s in names],
                source=str(g.attrs["source"]), seed=int(g.attrs["seed"]),
                hashes=[s.decode() if isinstance(s, bytes) else s for s in hashes],
            )
            if probe.digest != _str(g.attrs.get("digest", "")):
                raise OnnxAttrError(
                    f"{self.path}: the probe set does not match its digest (damaged or edited); "
                    f"`onnxattr check {self.path}` reports what is wrong"
                )
            return probe

    # -- models --------------------------------------------------------------------------
    def models(self) -> list[ModelRecord]:
        with self._open() as f:
            return [
                ModelRecord(
                    name=name, attrs=dict(g.attrs), methods=sorted(g.get("maps", {}).keys()),
                    n_images=int(next(iter(g["maps"].values())).shape[0]) if len(g.get("maps", {})) else 0,
                )
                for name, g in model_groups(f).items()
            ]

    def model_names(self) -> list[str]:
        """The stored models' names, sorted, without opening their segments."""
        with self._open() as f:
            return sorted(stored_names(f))

    def has_model(self, name: str) -> bool:
        if not self.path.exists():
            return False
        with self._open() as f:
            return f"models/{name}" in f

    def read_maps(self, name: str, method: str) -> np.ndarray:
        with self._open() as f:
            g = self._model_group(f, name)
            if method not in g["maps"]:
                raise OnnxAttrError(
                    f"model {name!r} has no {method!r} maps; it has: {', '.join(g['maps'])}"
                )
            maps = read_verified(g["maps"][method]).astype(np.float32)
            if f"map_scale/{method}" in g:
                maps *= read_verified(g["map_scale"][method])[:, None, None]
            return maps

    def probe_digest(self) -> str | None:
        """The probe set's digest without reading its images; None without a probe set."""
        if not self.path.exists():
            return None
        with self._open() as f:
            return _str(f["probe"].attrs.get("digest", "")) if "probe" in f else None

    def map_size(self) -> int | None:
        """Side of the stored maps: set by the first model added (format 1: the probe size)."""
        if not self.path.exists():
            return None
        with self._open() as f:
            return _stored_map_size(f)

    def read_features(self, name: str) -> np.ndarray:
        with self._open() as f:
            return read_verified(self._model_group(f, name)["features"])

    def _model_group(self, f: h5py.File, name: str) -> h5py.Group:
        if f"models/{name}" not in f:
            known = ", ".join(k for k in f.get("models", {}) if not k.startswith(".")) or "none"
            raise OnnxAttrError(f"no model {name!r} in {self.path}; models: {known}")
        return f[f"models/{name}"]

    def add_model(
        self, name: str, maps: Mapping[str, np.ndarray], features: np.ndarray,
        attrs: Mapping[str, Any], overwrite: bool = False, storage: MapStorage = DEFAULT_STORAGE,
    ) -> None:
        """Store one model's maps, features and metadata, all or nothing."""
        encoded = {method: storage.encode(m) for method, m in maps.items()}
        self.add_encoded(name, encoded, features, attrs, overwrite=overwrite, storage=storage)

    def add_encoded(
        self, name: str, encoded: Mapping[str, tuple[np.ndarray, np.ndarray | None]],
        features: np.ndarray, attrs: Mapping[str, Any], overwrite: bool = False,
        storage: MapStorage = DEFAULT_STORAGE, sketches: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """`add_model` for maps already encoded by ``storage`` (``MapStorage.encode``), as
        workers return them; ``sketches``: per method, (Np, k) (:mod:`.analysis.sketch`).
        The model is written to a segment of its own, then linked in one index commit."""
        self.commit_model(self.stage_model(name, encoded, features, attrs, overwrite=overwrite,
                                           storage=storage, sketches=sketches), overwrite=overwrite)

    def stage_model(
        self, name: str, encoded: Mapping[str, tuple[np.ndarray, np.ndarray | None]],
        features: np.ndarray, attrs: Mapping[str, Any], overwrite: bool = False,
        storage: MapStorage = DEFAULT_STORAGE, sketches: Mapping[str, np.ndarray] | None = None,
    ) -> StagedModel:
        """Write the model's segment, checked against the space as it is now, without making it
        visible: any process that shares the space's file system can (a Ray worker), and
        :meth:`commit_model` links it. Writers of many models stage in parallel."""
        check_name(name)
        shapes = {method: m.shape for method, (m, _) in encoded.items()}
        sketches = sketches or {}
        need = np.asarray(features).nbytes + sum(s.nbytes for s in sketches.values()) + sum(
            d.nbytes + (0 if s is None else s.nbytes) for d, s in encoded.values())
        self.check_free_space(need, name)
        if self.path.exists():  # refuse before writing the segment; checked again at commit
            with self._open() as f:
                self._check_model_fits(f, name, shapes, overwrite)

        def fill(f: h5py.File, group: str) -> None:
            g = f.create_group(group)
            mg = g.create_group("maps")
            for method, (data, scale) in encoded.items():
                mg.create_dataset(method, data=data, chunks=map_chunks(data.shape, data.dtype.itemsize),
                                  **storage.filter())
                if scale is not None:
                    g.require_group("map_scale").create_dataset(method, data=scale)
            for method, sk in sketches.items():
                write_sketch(g, method, sk)
            storage.write_features(g, "features", features)
            g.attrs.update({k: _attr(v) for k, v in attrs.items()})
            g.attrs["uid"] = uuid.uuid4().hex
            g.attrs["created"] = _now()
            seal(g)

        return StagedModel(name, self.write_segment("model", name, fill), shapes)

    def commit_model(self, staged: StagedModel, overwrite: bool = False,
                     keep_on_failure: bool = False) -> None:
        """Link a staged model; if the space does not take it, its segment is deleted (unless
        ``keep_on_failure``)."""
        def check(f: h5py.File | None) -> bool:
            self._check_model_fits(f, staged.name, staged.map_shapes, overwrite)
            return True

        self.commit("model", staged.name, staged.segment, check, keep_on_failure=keep_on_failure)

    def _check_model_fits(self, f: h5py.File | None, name: str, shapes: dict[str, tuple[int, ...]],
                          overwrite: bool) -> None:
        """Whether the space takes a model of these map shapes under this name."""
        if f is None or "probe" not in f:
            raise OnnxAttrError(f"{self.path} has no probe set")
        n = f["probe/images"].shape[0]
        for method, shape in shapes.items():
            if shape[0] != n:
                raise OnnxAttrError(f"{method} maps cover {shape[0]} images, the probe has {n}")
        have = _stored_map_size(f)
        if have is not None and any(shape[-1] != have for shape in shapes.values()):
            raise OnnxAttrError(
                f"{self.path} stores maps of {have}x{have}; maps of another size do not "
                f"compare: pass `map_size={have}` or use a new `space`")
        if f"models/{name}" in f and not overwrite:
            raise OnnxAttrError(f"model {name!r} is already in {self.path}; pass "
                                "`overwrite=True` or another `name`")

    def read_staged(self, staged: StagedModel) -> tuple[
        dict[str, tuple[np.ndarray, np.ndarray | None]], np.ndarray, dict[str, Any],
        dict[str, np.ndarray],
    ]:
        """A staged model's encoded maps, features, attributes and sketches, read back (to keep
        them as a pending file when the commit cannot happen now)."""
        with h5py.File(staged.segment.tmp, "r") as f:
            g = f["model"]
            scales = g.get("map_scale", {})
            encoded = {m: (read_verified(ds), read_verified(scales[m]) if m in scales else None)
                       for m, ds in g["maps"].items()}
            attrs = {k: _json_or(v) for k, v in g.attrs.items() if k not in ("uid", "created")}
            return (encoded, read_verified(g["features"]), attrs,
                    {m: read_verified(ds) for m, ds in g.get("sketch", {}).items()})

    def rewrite_model(self, name: str, edit: Callable[[h5py.Group], None],
                      drop_cache: Callable[[str], bool] = lambda key: False) -> None:
        """Commit a new segment for model ``name``: a copy of the stored one changed by ``edit``
        (its datasets re-sealed), dropping the pairwise-cache entries ``drop_cache`` names. The
        old segment is deleted; a model replaced meanwhile by another writer is an error."""
        with self._open() as f:
            uid = _str(self._model_group(f, name).attrs.get("uid", ""))

        def fill(out: h5py.File, group: str) -> None:
            with self._open() as f:
                f.copy(self._model_group(f, name), out, group)
            g = out[group]
            edit(g)
            seal(g)

        def check(f: h5py.File | None) -> bool:
            if f is None or f"models/{name}" not in f or _str(f[f"models/{name}"].attrs.get("uid", "")) != uid:
                raise OnnxAttrError(f"model {name!r} in {self.path} was changed or removed by "
                                    "another process meanwhile; retry")
            return True

        self.commit_segment("model", name, fill, check, also=lambda manifest: [
            segments.Change("cache", key, None) for key in manifest["cache"] if drop_cache(key)])

    def replace_features(self, name: str, features: np.ndarray, pooling: Mapping[str, Any]) -> None:
        """Swap in recomputed features (and how they were pooled); drop the cached feature-based
        affinities, which were computed from the old ones."""
        def edit(g: h5py.Group) -> None:
            if "features" in g and g["features"].shape[0] != features.shape[0]:
                raise OnnxAttrError(
                    f"{len(features)} feature rows for {name!r}, the space has {g['features'].shape[0]}")
            if "features" in g:
                del g["features"]
            DEFAULT_STORAGE.write_features(g, "features", features)
            g.attrs["features_pooling"] = _attr(dict(pooling))

        self.rewrite_model(name, edit, drop_cache=lambda key: key.startswith("features."))

    def write_cache(self, key: str, uids: list[str], names: list[str], values: np.ndarray,
                    attrs: Mapping[str, Any], digest: str, lock_wait: float | None = None) -> None:
        """Replace the pairwise-cache entry ``key`` by ``values`` over models ``names`` (their
        ``uids``), if the space still holds exactly those models on the probe set ``digest``."""
        def fill(f: h5py.File, group: str) -> None:
            g = f.create_group(group)
            str_t = h5py.string_dtype()
            g.create_dataset("uids", data=np.array(uids, dtype=object), dtype=str_t)
            g.create_dataset("names", data=np.array(names, dtype=object), dtype=str_t)
            g.create_dataset("values", data=values)
            g.attrs.update(attrs)
            seal(g)

        def unchanged(f: h5py.File | None) -> bool:
            if f is None or "probe" not in f or _str(f["probe"].attrs.get("digest", "")) != digest:
                return False
            models = f["models"]
            return all(n in models and _str(models[n].attrs.get("uid", "")) == u
                       for n, u in zip(names, uids, strict=True))

        self.commit_segment("cache", key, fill, unchanged, lock_wait=lock_wait)

    def add_sketches(self, name: str, sketches: Mapping[str, np.ndarray]) -> None:
        """A new segment for model ``name`` with ``sketches`` (method -> (Np, k)) added."""
        def edit(g: h5py.Group) -> None:
            for method, sk in sketches.items():
                write_sketch(g, method, sk)

        self.rewrite_model(name, edit)

    def check_free_space(self, need: int, what: str) -> None:
        """Refuse a write the disk cannot hold before it starts (a write that fails midway
        costs only its own segment, but wastes the work that computed it)."""
        folder = self.path.parent if self.path.parent.is_dir() else Path(".")
        free = shutil.disk_usage(folder).free
        margin = need + (4 << 20)  # uncompressed size (the upper bound) + metadata
        if free < margin:
            raise OnnxAttrError(
                f"not enough free disk space for {what!r}: it needs up to {margin / 2**20:.0f} MB "
                f"in {folder}, {free / 2**20:.0f} MB are free; free some space or use another "
                "`space`"
            )

    def remove_model(self, name: str) -> None:
        """Unlink one stored model and delete its segment (the disk space is freed at once)."""
        def check(f: h5py.File | None) -> bool:
            models = stored_names(f) if f is not None else []
            if not _NAME.match(name) or name not in models:
                raise OnnxAttrError(f"no model {name!r} in {self.path}; models: "
                                    f"{', '.join(models) or 'none'} (`onnxattr list`)")
            return True

        self.commit_segment("model", name, None, check)

    def delete(self) -> None:
        """Remove the whole space: its index, its segments and its lock file."""
        with space_lock(self.path, write=True):
            self.path.unlink(missing_ok=True)
            shutil.rmtree(segments.segment_dir(self.path), ignore_errors=True)
        lock_path(self.path).unlink(missing_ok=True)

    # -- maps computed but not stored (kept for a retry) ----------------------------------
    def pending_path(self, name: str) -> Path:
        return self.path.with_name(f"{self.path.name}.pending-{name}.h5")

    def keep_pending(self, name: str, key: str,
                     encoded: Mapping[str, tuple[np.ndarray, np.ndarray | None]],
                     features: np.ndarray, attrs: Mapping[str, Any],
                     sketches: Mapping[str, np.ndarray] | None = None) -> Path | None:
        """Save what `add` computed (maps as encoded for storage) beside the space, written whole
        and then renamed; None if even that fails (then the caller's error stands)."""
        path = self.pending_path(name)
        tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
        try:
            with h5py.File(tmp, "w") as f:
                for method, (data, scale) in encoded.items():
                    f.create_dataset(f"maps/{method}", data=data)
                    if scale is not None:
                        f.create_dataset(f"map_scale/{method}", data=scale)
                for method, sk in (sketches or {}).items():
                    f.create_dataset(f"sketch/{method}", data=sk)
                f.create_dataset("features", data=np.asarray(features, dtype=np.float32))
                f.attrs.update(key=key, attrs=json.dumps(dict(attrs), default=str))
                seal(f)
            os.replace(tmp, path)
            return path
        except (OSError, ValueError, TypeError):
            tmp.unlink(missing_ok=True)
            return None

    def take_pending(self, name: str, key: str) -> tuple[
        dict[str, tuple[np.ndarray, np.ndarray | None]], np.ndarray, dict[str, Any],
        dict[str, np.ndarray],
    ] | None:
        """Maps (and sketches) kept by an earlier failed write of the same work (same
        ``key``), if intact."""
        path = self.pending_path(name)
        if not path.is_file():
            return None
        try:
            with h5py.File(path, "r") as f:
                if _str(f.attrs.get("key", "")) != key:
                    return None
                scales = f.get("map_scale", {})
                encoded = {m: (read_verified(ds), read_verified(scales[m]) if m in scales else None)
                           for m, ds in f["maps"].items()}
                sketches = {m: read_verified(ds) for m, ds in f.get("sketch", {}).items()}
                return (encoded, read_verified(f["features"]), json.loads(_str(f.attrs["attrs"])),
                        sketches)
        except (OSError, KeyError, ValueError, OnnxAttrError):
            return None  # unreadable or damaged: compute afresh

    def drop_pending(self, name: str) -> None:
        self.pending_path(name).unlink(missing_ok=True)


def write_sketch(model: h5py.Group, method: str, sketch: np.ndarray) -> h5py.Dataset:
    """``/models/<name>/sketch/<method>`` (:mod:`.analysis.sketch`), compressed like maps."""
    return model.require_group("sketch").create_dataset(
        method, data=sketch, chunks=(min(len(sketch), 256), sketch.shape[1]),
        **MapStorage("float16").filter())


def _stored_map_size(f: h5py.File) -> int | None:
    """The side of the first stored model's maps (one segment opened, not every one)."""
    for name in stored_names(f):
        for ds in f["models"][name].get("maps", {}).values():
            return int(ds.shape[-1])
    return None


def _what(kind: str, name: str) -> str:
    return {"probe": "the probe set", "model": f"model {name!r}",
            "cache": f"the pairwise cache {name!r}"}[kind]


def _attr(v: Any) -> Any:
    """HDF5 attributes hold scalars and strings; structured values are stored as JSON."""
    return json.dumps(v) if isinstance(v, (dict, list, tuple)) else ("" if v is None else v)


def _json_or(v: Any) -> Any:
    """An attribute as `_attr` stored it: JSON text back to its value, anything else as is."""
    v = v.decode() if isinstance(v, bytes) else v
    if isinstance(v, str) and v[:1] in "[{":
        try:
            return json.loads(v)
        except ValueError:
            pass
    return v.item() if isinstance(v, np.generic) else v


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _str(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


# -- locking and opening -----------------------------------------------------------------
QUIET_WAIT = 2.0  # seconds a writer waits for the lock before saying that it waits


def lock_timeout() -> float:
    """Seconds a writer waits for the space's lock (``ONNXATTR_LOCK_TIMEOUT``, default 600)."""
    try:
        return float(os.environ.get("ONNXATTR_LOCK_TIMEOUT", "600"))
    except ValueError:
        raise OnnxAttrError("ONNXATTR_LOCK_TIMEOUT must be a number of seconds") from None


def lock_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".lock")


@contextmanager
def space_lock(path: str | Path, write: bool, timeout: float | None = None) -> Iterator[None]:
    """Hold the space's inter-process lock: shared to read, exclusive to write.

    A reader of a space in a folder it cannot write (read-only media) has no writer to fear and
    proceeds without the lock."""
    lp = lock_path(path)
    timeout = lock_timeout() if timeout is None else timeout
    lock = filelock.ReadWriteLock(str(lp))
    acquire = lock.acquire_write if write else lock.acquire_read
    try:
        acquire(timeout=min(QUIET_WAIT, timeout))  # commits take milliseconds: wait quietly
    except filelock.Timeout:
        print(f"waiting for another onnxattr process using {path} to finish (up to "
              f"{timeout:g} s; ONNXATTR_LOCK_TIMEOUT sets the limit)", file=sys.stderr, flush=True)
        try:
            acquire(timeout=timeout)
        except filelock.Timeout:
            raise OnnxAttrError(
                f"{path} is still in use by another onnxattr process after {timeout:g} s "
                f"(lock {lp}); retry when it is done or raise ONNXATTR_LOCK_TIMEOUT"
            ) from None
    except (OSError, sqlite3.Error) as exc:  # the lock file cannot be created or opened
        if not write and not os.access(lp.parent, os.W_OK):
            yield
            return
        raise OnnxAttrError(f"cannot use the lock file {lp} ({exc}); "
                            "the space's folder must be writable") from None
    try:
        yield
    finally:
        lock.release()


def _open_error(path: Path, exc: OSError) -> str:
    text = " ".join(str(exc).split())
    if "file signature not found" in text:
        return f"{path} is not an HDF5 file; give a model space written by onnxattr"
    if any(k in text for k in ("truncated", "bad object header", "addr overflow", "bad symbol")):
        return (f"{path} is truncated or damaged beyond what HDF5 can open ({text}); no part "
                "of it can be read: restore it from a backup")
    if "unable to lock file" in text.lower():
        return (f"{path} is held open by a program other than onnxattr (HDF5 file lock: {text}); "
                "close it and retry")
    return f"{path} is not a readable HDF5 file ({text})"


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block (a write, and closing the file) is done.

    An interrupt raised inside an HDF5 call can leave the file half-updated (an attribute being
    replaced, a link being moved), which no rollback can repair; so a write finishes, the file is
    closed, and then the signal acts as it would have. Only the main thread receives signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    before = {s: h for s in held if (h := signal.getsignal(s)) is not None}  # None: set from C
    for s in before:
        signal.signal(s, lambda signum, _frame: caught.append(signum))
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
        if caught:
            signal.raise_signal(caught[0])


@contextmanager
def open_space(path: str | Path, mode: str = "r", lock_wait: float | None = None,
               salvaging: bool = False) -> Iterator[h5py.File]:
    """Open a model space to read, under its shared lock, refusing foreign files, unknown
    format versions and (unless ``salvaging``) an index apart from its segments folder. Writes
    go through :class:`ModelSpace`, which commits segments."""
    if mode != "r":
        raise ValueError(f"open_space reads only (mode {mode!r}); write through ModelSpace")
    path = Path(path)
    if not path.exists():
        raise OnnxAttrError(
            f"{path}: no model space here; create one with `onnxattr probe build --space {path}`"
        )
    if path.is_dir():
        raise OnnxAttrError(f"{path} is a folder; give the model-space file (e.g. {path}/space.h5)")
    with space_lock(path, write=False, timeout=lock_wait), _opened(path, salvaging) as f:
        yield f


@contextmanager
def _opened(path: Path, salvaging: bool = False) -> Iterator[h5py.File]:
    """The space file opened read-only and format-checked (the caller holds the lock);
    ``salvaging`` reads an index separated from its folder (to copy it out)."""
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise OnnxAttrError(_open_error(path, exc)) from None
    try:
        if _str(f.attrs.get("format", "")) != FORMAT:
            raise OnnxAttrError(f"{path} was not written by onnxattr (no format attribute "
                                f"'{FORMAT}'); choose another `space` path")
        version = format_version(f)
        if version > FORMAT_VERSION:
            raise OnnxAttrError(f"{path} has space format {version}; this onnxattr reads up to "
                                f"{FORMAT_VERSION}: upgrade onnxattr")
        if version < 1:
            raise OnnxAttrError(
                f"{path} has no valid format_version attribute "
                f"({f.attrs.get('format_version')!r}); it was edited or damaged: "
                f"`onnxattr check {path}`")
        if version >= SEGMENTED_VERSION and not salvaging:
            segments.check_folder(f)
        yield f
    finally:
        f.close()


def format_version(f: h5py.File) -> int:
    try:
        return int(f.attrs.get("format_version", 0))
    except (TypeError, ValueError):
        return 0


def is_segmented(f: h5py.File) -> bool:
    """Whether an open space is the segmented layout (format 3) rather than one file (1-2)."""
    return format_version(f) >= SEGMENTED_VERSION


def check_writable_path(path: Path) -> None:
    if path.is_dir():
        raise OnnxAttrError(f"{path} is a folder; give the model-space file (e.g. {path}/space.h5)")
    if not path.parent.is_dir():
        raise OnnxAttrError(f"folder {path.parent} does not exist; create it first")


@contextmanager
def open_index(path: Path) -> Iterator[h5py.File | None]:
    """The current index of a segmented space to commit against, None for a new space; a
    single-file space (format 1-2) is read-only to this onnxattr. The caller holds the lock."""
    if not path.exists():
        yield None
        return
    with _opened(path) as f:
        if not is_segmented(f):
            raise OnnxAttrError(
                f"{path} is a single-file space (format {format_version(f)}), which this onnxattr "
                f"reads but no longer writes; `onnxattr migrate {path}` converts it in place "
                f"(the old file is kept as {path}.single)")
        yield f


def stored_names(f: h5py.File) -> list[str]:
    """The models' names, checked as :func:`model_groups` checks them; in a segmented space
    from the index's links alone (no segment opened: writers into large spaces stay fast)."""
    if not is_segmented(f):
        return list(model_groups(f))
    models = f.get("models", {})
    names = [n for n in models if not n.startswith(".")] if isinstance(models, h5py.Group) else []
    if not isinstance(models, (h5py.Group, dict)) or any(
            not isinstance(models.get(n, getlink=True), h5py.ExternalLink) for n in names):
        model_groups(f)  # raises the damage error
    return names


def model_groups(f: h5py.File) -> dict[str, h5py.Group]:
    """The space's model groups by name; anything else where models live is damage, refused with
    the commands that say what is wrong and keep what is intact."""
    models = f.get("models", {})
    fix = (f"`onnxattr check {f.filename}` says what is damaged, `onnxattr salvage {f.filename} "
           "OUT.h5` copies the intact models")
    if not isinstance(models, (h5py.Group, dict)):
        raise OnnxAttrError(f"{f.filename}: /models is not a group, the file was edited or "
                            f"damaged; {fix}")
    out = {}
    for name, g in models.items():
        if name.startswith("."):
            continue
        if not isinstance(g, h5py.Group):
            raise OnnxAttrError(f"{f.filename}: /models/{name} is a dataset, not a model, the file "
                                f"was edited or damaged; {fix}")
        out[name] = g
    return out


# -- checksums ---------------------------------------------------------------------------
def update_checksum(h: Any, block: np.ndarray) -> None:
    """Feed one block of a dataset's values (rows in order) to a running sha256."""
    if block.dtype.kind == "O":  # variable-length strings: their UTF-8 bytes, NUL-separated
        for v in block.ravel():
            h.update(v if isinstance(v, bytes) else str(v).encode("utf-8", "surrogateescape"))
            h.update(b"\0")
    else:
        h.update(np.ascontiguousarray(block).tobytes())


def array_checksum(values: np.ndarray) -> str:
    """sha256 of a dataset's values as read back (row-major bytes in the stored dtype)."""
    h = hashlib.sha256()
    update_checksum(h, np.asarray(values))
    return h.hexdigest()


def iter_blocks(ds: h5py.Dataset) -> Iterator[np.ndarray]:
    """A dataset's values in blocks of whole rows (bounded memory), in order."""
    if ds.shape is None:  # an empty (null) dataspace: nothing to read
        return
    if ds.shape == () or ds.shape[0] == 0:
        yield np.asarray(ds[()])
        return
    row = max(1, ds.dtype.itemsize * int(np.prod(ds.shape[1:])))
    step = max(1, _HASH_BLOCK // row)
    for k in range(0, ds.shape[0], step):
        yield ds[k:k + step]


def dataset_checksum(ds: h5py.Dataset) -> str:
    """:func:`array_checksum` of a stored dataset, read block by block."""
    h = hashlib.sha256()
    for block in iter_blocks(ds):
        update_checksum(h, block)
    return h.hexdigest()


def seal(group: h5py.Group) -> None:
    """Give every dataset under ``group`` its checksum, computed from the values read back."""
    def visit(_: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            obj.attrs[CHECKSUM] = dataset_checksum(obj)

    group.visititems(visit)


def located(ds: h5py.Dataset) -> tuple[Path, str]:
    """(space file, path in the space) of a dataset, also when it lives in a segment (whose
    group is /model, /probe or /cache in its own file)."""
    path, name = Path(ds.file.filename), ds.name.strip("/")
    root = ds.file.attrs
    if _str(root.get("format", "")) == segments.SEGMENT_FORMAT and path.parent.name.endswith(".d"):
        kind, seg_name = _str(root.get("kind", "")), _str(root.get("name", ""))
        if kind in segments.KINDS:
            inner = name.split("/", 1)[1] if "/" in name else ""
            name = f"{segments.link_path(kind, seg_name)}/{inner}".rstrip("/")
            path = path.parent.with_name(path.parent.name[:-2])
    return path, name


def damaged_error(ds: h5py.Dataset, detail: str) -> OnnxAttrError:
    path, name = located(ds)
    return OnnxAttrError(
        f"{path}: dataset {name} is damaged ({detail}); `onnxattr check {path}` lists the "
        f"damage, `onnxattr salvage {path} NEW.h5` copies the intact models"
    )


def read_verified(ds: h5py.Dataset) -> np.ndarray:
    """All values of a dataset, checked against its stored checksum (if it has one)."""
    try:
        values = ds[()]
    except OSError as exc:
        raise damaged_error(ds, f"unreadable: {exc}") from None
    want = ds.attrs.get(CHECKSUM)
    if want is not None and array_checksum(values) != _str(want):
        raise damaged_error(ds, "checksum mismatch")
    return values


def verify_dataset(ds: h5py.Dataset) -> None:
    """Raise if the dataset's values no longer match its checksum (datasets without one pass)."""
    want = ds.attrs.get(CHECKSUM)
    if want is None:
        return
    try:
        got = dataset_checksum(ds)
    except OSError as exc:
        raise damaged_error(ds, f"unreadable: {exc}") from None
    if got != _str(want):
        raise damaged_error(ds, "checksum mismatch")
