"""Build synthetic model spaces: each part written with plain h5py into a segment, committed
through the space's one write path (`ModelSpace.commit_segment`), following the layout contract."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np

from onnxattr.space import ModelSpace


def create_space(path: Path, n_probe: int, size: int, digest: str = "d0") -> Path:
    rng = np.random.default_rng(0)

    def fill(f: h5py.File, group: str) -> None:
        p = f.create_group(group)
        p.create_dataset("images", data=rng.integers(0, 255, (n_probe, size, size, 3), np.uint8))
        s = h5py.string_dtype()
        p.create_dataset("names", data=[f"img{i}.png" for i in range(n_probe)], dtype=s)
        p.create_dataset("sha256", data=[f"{i:064x}" for i in range(n_probe)], dtype=s)
        p.attrs.update(size=size, seed=0, source="synthetic", digest=digest)

    ModelSpace(path).commit_segment("probe", "", fill)
    return path


def add_model(path: Path, name: str, maps: Mapping[str, np.ndarray] | None = None,
              features: np.ndarray | None = None, dtype: str = "float32",
              compress: bool = False, attrs: Mapping[str, object] | None = None) -> str:
    """Add (or replace) a model group with a fresh uid, like `onnxattr add` (``compress``: the
    per-image gzip chunks that onnxattr.space writes; ``attrs``: metadata replacing the
    defaults)."""
    uid = uuid.uuid4().hex

    def fill(f: h5py.File, group: str) -> None:
        g = f.create_group(group)
        g.attrs.update(uid=uid, onnx_sha256="0" * 64, encoder_node="enc", encoder_tensor="enc",
                       preprocessing="{}", methods=json.dumps({m: {} for m in (maps or {})}),
                       versions="{}", created="2026-01-01T00:00:00Z", verify_rel_err=0.0,
                       framework="synthetic", task="")
        g.attrs.update(dict(attrs or {}))
        m = g.create_group("maps")
        for method, arr in (maps or {}).items():
            arr = np.asarray(arr, dtype=dtype)
            opts = dict(chunks=(1, *arr.shape[1:]), compression="gzip", compression_opts=1,
                        shuffle=True) if compress else {}
            m.create_dataset(method, data=arr, **opts)
        if features is not None:
            g.create_dataset("features", data=np.asarray(features, dtype=np.float32))

    ModelSpace(path).commit_segment("model", name, fill)
    return uid


def remove_model(path: Path, name: str) -> None:
    ModelSpace(path).commit_segment("model", name, None)


def random_space(path: Path, n_models: int = 5, n_probe: int = 12, size: int = 8, dim: int = 16,
                 methods: tuple[str, ...] = ("saliency", "grad_input"), seed: int = 0) -> dict:
    """A space of correlated random models: model i = shared base + noise scaled by i, so that
    similarity decreases with index distance. Returns {name: {"maps": ..., "features": ...}}."""
    rng = np.random.default_rng(seed)
    create_space(path, n_probe, size)
    base_maps = {m: rng.normal(size=(n_probe, size, size)) for m in methods}
    base_feat = rng.normal(size=(n_probe, dim))
    data = {}
    for i in range(n_models):
        maps = {m: b + 0.5 * i * rng.normal(size=b.shape) for m, b in base_maps.items()}
        feats = base_feat + 0.5 * i * rng.normal(size=base_feat.shape)
        name = f"m{i}"
        add_model(path, name, maps, feats)
        data[name] = {"maps": {k: v.astype(np.float32) for k, v in maps.items()},
                      "features": feats.astype(np.float32)}
    return data


def default_ready_space(path: Path, methods: tuple[str, ...] = ("saliency", "grad_input"),
                        size: int = 8, **kwargs) -> dict:
    """:func:`random_space` holding what the default estimator reads: the methods among its parts
    added to ``methods``, probes at least as fine as its grid; so tests of "no -m given" follow
    the default wherever it moves."""
    from onnxattr.analysis.selection import default_needs
    from onnxattr.attribution import list_methods

    bases, grid = default_needs()
    known = set(list_methods())
    methods = tuple(dict.fromkeys([*methods, *(b for b in bases if b in known)]))
    return random_space(path, methods=methods, size=max(size, grid), **kwargs)
