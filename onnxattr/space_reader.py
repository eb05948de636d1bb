"""A read-only view of a model space, the one place analysis learns the space's HDF5 layout.

Analysis modules read models, maps, features and the probe set through a :class:`SpaceReader`
instead of spelling ``/models/<name>/maps/<method>`` themselves, so a change of layout (e.g. one
file per model) changes this module only. :func:`read_space` opens the file once, under the space's
shared lock and with its format check (:func:`onnxattr.space.open_space`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .errors import OnnxAttrError
from .space import model_groups, open_space, read_verified, verify_dataset

Images = slice | Sequence[int] | np.ndarray
#: Where the pairwise estimators' cache lives (written by :mod:`.analysis.distances`).
CACHE_GROUP = "analysis/estimators"


#: The methods that measured the input from the model's own zero before they took a reference.
_BEFORE_REFERENCES = ("grad_input", "elrp")


class SpaceReader:
    """Read-only access to an open space; valid inside :func:`read_space`'s ``with`` block."""

    def __init__(self, f: h5py.File) -> None:
        self._f = f
        self._models = model_groups(f)

    @property
    def path(self) -> Path:
        return Path(self._f.filename)

    # -- models --------------------------------------------------------------------------
    def names(self) -> list[str]:
        """The stored models' names, sorted (groups still being written by `add` left out)."""
        return sorted(self._models)

    def has_model(self, name: str) -> bool:
        return name in self._models

    def _group(self, name: str) -> h5py.Group:
        if name not in self._models:
            raise OnnxAttrError(f"no model {name!r} in {self.path}; models: "
                                f"{', '.join(self._models) or 'none'}")
        return self._models[name]

    def attrs(self, name: str) -> dict[str, Any]:
        """The model's metadata attributes (uid, onnx_sha256, preprocessing, ...), bytes decoded."""
        return {k: v.decode() if isinstance(v, bytes) else v for k, v in self._group(name).attrs.items()}

    # -- maps ----------------------------------------------------------------------------
    def methods(self, name: str) -> list[str]:
        """The attribution methods whose maps the model has, sorted."""
        return sorted(self._group(name).get("maps", {}).keys())

    def map_reference(self, name: str, method: str) -> str | None:
        """What the model's `method` maps measure the input from, by its recorded method
        parameters (`attribution.methods.REFERENCES`); None if the method takes no reference or the
        model has no such maps. Maps stored before grad_input and elrp had a reference measured it
        from the model's own zero."""
        recorded = self.attrs(name).get("methods") or "{}"
        params = (json.loads(recorded) if isinstance(recorded, str) else recorded).get(method)
        if params is None:
            return None
        if "reference" in params:
            return str(params["reference"])
        return "model" if method in _BEFORE_REFERENCES else None

    def has_maps(self, name: str, method: str) -> bool:
        return method in self._group(name).get("maps", {})

    def _maps_ds(self, name: str, method: str) -> h5py.Dataset:
        g = self._group(name)
        if method not in g.get("maps", {}):
            raise OnnxAttrError(f"model {name!r} has no {method!r} maps; it has: "
                                f"{', '.join(self.methods(name)) or 'none'}")
        return g["maps"][method]

    def map_shape(self, name: str, method: str) -> tuple[int, ...]:
        """(N, H, W) of the model's stored maps, without reading them."""
        return tuple(self._maps_ds(name, method).shape)

    def map_itemsize(self, name: str, method: str) -> int:
        """Bytes per stored map value: what reading a chunk of maps costs in memory."""
        return int(self._maps_ds(name, method).dtype.itemsize)

    def maps(self, name: str, method: str, images: Images = slice(None)) -> np.ndarray:
        """The model's maps of the selected probe images, decoded to float32 (a per-image scale,
        where one is stored for low-precision maps, applied)."""
        g = self._group(name)
        sel = _selection(images)
        out = np.asarray(self._maps_ds(name, method)[sel], dtype=np.float32)
        if method in g.get("map_scale", {}):
            out = out * np.asarray(g["map_scale"][method][sel], np.float32)[..., None, None]
        return out

    # -- features ------------------------------------------------------------------------
    def has_features(self, name: str) -> bool:
        ds = self._group(name).get("features")
        return isinstance(ds, h5py.Dataset)

    def feature_shape(self, name: str) -> tuple[int, ...]:
        """(Np, D) of the model's stored features; () if it has none."""
        ds = self._group(name).get("features")
        return tuple(ds.shape) if isinstance(ds, h5py.Dataset) else ()

    def features(self, name: str) -> np.ndarray:
        """The model's encoder outputs on the probe set, checked against their checksum."""
        if not self.has_features(name):
            raise OnnxAttrError(f"model {name!r} has no stored features")
        return read_verified(self._group(name)["features"])

    # -- probe ---------------------------------------------------------------------------
    def has_probe(self) -> bool:
        return "probe/images" in self._f

    def n_probe(self) -> int:
        """Number of probe images; 0 without a probe set."""
        return int(self._f["probe/images"].shape[0]) if self.has_probe() else 0

    def probe_attrs(self) -> dict[str, Any]:
        """The probe set's attributes (size, seed, source, digest)."""
        return dict(self._f["probe"].attrs) if "probe" in self._f else {}

    def probe_images(self, images: Images = slice(None)) -> np.ndarray:
        """The selected probe images, (n, H, W, 3) uint8."""
        return self._f["probe/images"][_selection(images)]

    def probe_names(self) -> list[str]:
        """The probe images' file names, decoded."""
        if "probe/names" not in self._f:
            return []
        return [v.decode() if isinstance(v, bytes) else str(v) for v in self._f["probe/names"][()]]

    # -- what the estimators need: identity, sketches, stored values, checksums, the cache --
    def uid(self, name: str) -> str:
        """The model's uid (new on every ``add``), which the pairwise cache is keyed by."""
        uid = self._group(name).attrs.get("uid")
        if uid is None:
            raise OnnxAttrError(f"model {name!r} has no uid attribute; re-add it with `onnxattr add`")
        return uid.decode() if isinstance(uid, bytes) else str(uid)

    def probe_digest(self) -> str:
        """The probe set's digest (on /probe, or on /probe/sha256 in older files); '' if none."""
        for path in ("probe", "probe/sha256"):
            if path in self._f and "digest" in self._f[path].attrs:
                d = self._f[path].attrs["digest"]
                return d.decode() if isinstance(d, bytes) else str(d)
        return ""

    def stored_maps(self, name: str, method: str, images: slice,
                    out: np.ndarray | None = None) -> np.ndarray:
        """The maps of ``images`` as stored: no per-image scale applied, which only per-image
        normalised uses (cosines) may ignore; float32 maps are read straight into ``out``."""
        ds = self._maps_ds(name, method)
        if out is None:
            return ds[images]
        if ds.dtype == np.float32:
            ds.read_direct(out, source_sel=np.s_[images])
        else:
            out[...] = ds[images]
        return out

    def _sketch_ds(self, name: str, method: str) -> h5py.Dataset:
        g = self._group(name)
        if method not in g.get("sketch", {}):
            raise OnnxAttrError(f"model {name!r} has no {method!r} sketch; "
                                f"`onnxattr sketch {self.path}` computes it from the stored maps")
        return g["sketch"][method]

    def has_sketch(self, name: str, method: str) -> bool:
        return method in self._group(name).get("sketch", {})

    def sketch_shape(self, name: str, method: str) -> tuple[int, ...]:
        """(N, k) of the model's stored map sketches (:mod:`.analysis.sketch`), without reading."""
        return tuple(self._sketch_ds(name, method).shape)

    def sketch(self, name: str, method: str, dims: int | None = None) -> np.ndarray:
        """The first ``dims`` (default all) stored sketch dimensions of every probe image."""
        return self._sketch_ds(name, method)[:, :dims]

    def verify_maps(self, name: str, method: str) -> None:
        """Raise if the model's maps no longer match their checksum (without keeping them)."""
        verify_dataset(self._maps_ds(name, method))

    def verify_features(self, name: str) -> None:
        if not self.has_features(name):
            raise OnnxAttrError(f"model {name!r} has no stored features")
        verify_dataset(self._group(name)["features"])

    def verify_sketch(self, name: str, method: str) -> None:
        verify_dataset(self._sketch_ds(name, method))

    def cached_pairs(self, key: str) -> tuple[dict[str, Any], list[str], np.ndarray] | None:
        """The pairwise cache entry ``key`` (:mod:`.analysis.distances`): its attributes, the
        model uids of its rows and its values; None if there is none."""
        path = f"{CACHE_GROUP}/{key}"
        if path not in self._f:
            return None
        g = self._f[path]
        uids = [u.decode() if isinstance(u, bytes) else u for u in g["uids"][()]]
        return dict(g.attrs), uids, g["values"][()]


def _selection(images: Images) -> slice | np.ndarray:
    """An h5py selection: a slice as is, indices as a sorted unique array (what h5py needs)."""
    if isinstance(images, slice):
        return images
    idx = np.asarray(images, dtype=np.int64).ravel()
    if idx.size and np.any(np.diff(idx) <= 0):
        raise ValueError("image indices must be strictly increasing")
    return idx


@contextmanager
def read_space(path: str | Path) -> Iterator[SpaceReader]:
    """Open the space at ``path`` read-only (shared lock, format check) for one read session."""
    with open_space(path, "r") as f:
        yield SpaceReader(f)
