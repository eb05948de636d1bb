"""Stage 4: the model space — one HDF5 file readable with plain h5py (layout in the README).

Writes are all-or-nothing at the level of a model: `add` computes everything first, writes the new
group under a hidden name, and only then links it at /models/<name>; a failure or interrupt on the
way deletes the hidden group, so the space reads exactly as before.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .errors import OnnxAttrError
from .probe import ProbeSet

FORMAT = "onnxattr-space"
FORMAT_VERSION = 1
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_PENDING = ".pending-"


@dataclass
class ModelRecord:
    """What `list` shows of a stored model."""

    name: str
    attrs: dict[str, Any]
    methods: list[str]
    n_images: int


def check_name(name: str) -> str:
    if not _NAME.match(name) or name.startswith("."):
        raise OnnxAttrError(
            f"model name {name!r} is not allowed; use letters, digits, '_', '.', '-' (--name)"
        )
    return name


class ModelSpace:
    """An onnxattr model space on disk. Open briefly per operation; nothing is held open."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # -- opening -------------------------------------------------------------------------
    @contextmanager
    def _open(self, mode: str = "r") -> Iterator[h5py.File]:
        if mode == "r" and not self.path.exists():
            raise OnnxAttrError(
                f"{self.path}: no model space here; create one with `onnxattr probe build --space {self.path}`"
            )
        try:
            f = h5py.File(self.path, mode)
        except OSError as exc:
            raise OnnxAttrError(f"{self.path} is not a readable HDF5 file ({exc})") from exc
        try:
            if f.attrs.get("format") != FORMAT and (mode == "r" or len(f.keys()) or len(f.attrs)):
                raise OnnxAttrError(
                    f"{self.path} was not written by onnxattr (no format attribute "
                    f"'{FORMAT}'); choose another --space path"
                )
            if mode != "r" and "format" not in f.attrs:
                f.attrs["format"] = FORMAT
                f.attrs["format_version"] = FORMAT_VERSION
            version = int(f.attrs.get("format_version", 0))
            if version > FORMAT_VERSION:
                raise OnnxAttrError(
                    f"{self.path} has space format {version}; this onnxattr reads up to "
                    f"{FORMAT_VERSION}: upgrade onnxattr"
                )
            yield f
        finally:
            f.close()

    # -- probe ---------------------------------------------------------------------------
    def has_probe(self) -> bool:
        if not self.path.exists():
            return False
        with self._open() as f:
            return "probe" in f

    def write_probe(self, probe: ProbeSet, replace: bool = False) -> None:
        with self._open("a") as f:
            if "probe" in f:
                if f["probe"].attrs.get("digest") == probe.digest:
                    return
                if len(f.get("models", {})):
                    raise OnnxAttrError(
                        f"{self.path} already holds models computed on another probe set; "
                        "use a new --space file (maps on different probes do not compare)"
                    )
                if not replace:
                    raise OnnxAttrError(
                        f"{self.path} already has a probe set; pass --replace to rebuild it"
                    )
                del f["probe"]
            g = f.create_group("probe")
            g.create_dataset("images", data=probe.images, chunks=(1, *probe.images.shape[1:]),
                             compression="gzip", compression_opts=4)
            str_t = h5py.string_dtype("utf-8")
            g.create_dataset("names", data=np.array(probe.names, dtype=object), dtype=str_t)
            g.create_dataset("sha256", data=np.array(probe.hashes, dtype=object), dtype=str_t)
            g.attrs.update(size=probe.size, seed=probe.seed, source=probe.source,
                           digest=probe.digest, created=_now())

    def read_probe(self) -> ProbeSet:
        with self._open() as f:
            if "probe" not in f:
                raise OnnxAttrError(
                    f"{self.path} has no probe set; build one with `onnxattr probe build --space {self.path}`"
                )
            g = f["probe"]
            return ProbeSet(
                images=g["images"][()],
                names=[s.decode() if isinstance(s, bytes) else s for s in g["names"][()]],
                source=str(g.attrs["source"]), seed=int(g.attrs["seed"]),
                hashes=[s.decode() if isinstance(s, bytes) else s for s in g["sha256"][()]],
            )

    # -- models --------------------------------------------------------------------------
    def models(self) -> list[ModelRecord]:
        with self._open() as f:
            models = f.get("models", {})
            return [
                ModelRecord(
                    name=name, attrs=dict(g.attrs), methods=sorted(g.get("maps", {}).keys()),
                    n_images=int(next(iter(g["maps"].values())).shape[0]) if len(g.get("maps", {})) else 0,
                )
                for name, g in models.items() if not name.startswith(".")
            ]

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
            return g["maps"][method][()]

    def read_features(self, name: str) -> np.ndarray:
        with self._open() as f:
            return self._model_group(f, name)["features"][()]

    def _model_group(self, f: h5py.File, name: str) -> h5py.Group:
        if f"models/{name}" not in f:
            known = ", ".join(k for k in f.get("models", {}) if not k.startswith(".")) or "none"
            raise OnnxAttrError(f"no model {name!r} in {self.path}; models: {known}")
        return f[f"models/{name}"]

    def add_model(
        self, name: str, maps: Mapping[str, np.ndarray], features: np.ndarray,
        attrs: Mapping[str, Any], overwrite: bool = False,
    ) -> None:
        """Store one model's maps, features and metadata, all or nothing."""
        check_name(name)
        with self._open("a") as f:
            if "probe" not in f:
                raise OnnxAttrError(f"{self.path} has no probe set")
            n = f["probe/images"].shape[0]
            for method, m in maps.items():
                if m.shape[0] != n:
                    raise OnnxAttrError(f"{method} maps cover {m.shape[0]} images, the probe has {n}")
            models = f.require_group("models")
            if name in models and not overwrite:
                raise OnnxAttrError(
                    f"model {name!r} is already in {self.path}; pass --overwrite or --name OTHER"
                )
            for stale in [k for k in models if k.startswith(_PENDING)]:
                del models[stale]  # left by a writer killed mid-write (SIGKILL): never linked
            tmp = f"{_PENDING}{name}"
            try:
                g = models.create_group(tmp)
                mg = g.create_group("maps")
                for method, m in maps.items():
                    # Uncompressed: float maps shrink ~20 % under gzip but then cost the
                    # distance stage twice the time to read.
                    mg.create_dataset(method, data=np.asarray(m, dtype=np.float32),
                                      chunks=(1, *m.shape[1:]))
                g.create_dataset("features", data=np.asarray(features, dtype=np.float32))
                g.attrs.update({k: _attr(v) for k, v in attrs.items()})
                g.attrs["uid"] = uuid.uuid4().hex
                g.attrs["created"] = _now()
                f.flush()
                if name in models:
                    del models[name]
                models.move(tmp, name)
            except BaseException:
                if tmp in models:
                    del models[tmp]
                raise

    def remove_model(self, name: str) -> None:
        with self._open("a") as f:
            self._model_group(f, name)
            del f[f"models/{name}"]


def _attr(v: Any) -> Any:
    """HDF5 attributes hold scalars and strings; structured values are stored as JSON."""
    return json.dumps(v) if isinstance(v, (dict, list, tuple)) else ("" if v is None else v)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
