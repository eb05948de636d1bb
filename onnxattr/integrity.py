"""Whole-space integrity: `onnxattr check` (what is damaged) and `onnxattr salvage` (keep the rest).

`check` opens the space read-only under its shared lock and verifies, without trusting anything it
reads: the format and its version, the structure (probe set, per-model groups, shapes against the
probe), every dataset's checksum (``sha256`` attribute, over the values as read back), finite
values in maps, sketches and features, the per-image probe hashes and the probe digest. A dataset
HDF5 cannot read (a damaged chunk, a broken header) is reported, not raised.

`salvage` copies the probe set and every intact model into a new file (the pairwise cache is left
behind: it is recomputed on demand; so is a damaged sketch, derived from the maps), writes it
under a temporary name, checks the copy, and only then gives it its final name.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .errors import OnnxAttrError
from .space import (
    CHECKSUM,
    FORMAT,
    FORMAT_VERSION,
    iter_blocks,
    open_space,
    space_lock,
    update_checksum,
)


@dataclass
class Finding:
    """One thing `check` looked at: ``level`` is "ok", "note" (harmless) or "damaged"."""

    path: str
    level: str
    detail: str


@dataclass
class CheckReport:
    space: Path
    findings: list[Finding] = field(default_factory=list)
    models: dict[str, bool] = field(default_factory=dict)  # name -> intact
    probe_ok: bool = False
    n_images: int = 0

    @property
    def damaged(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "damaged"]

    @property
    def ok(self) -> bool:
        return not self.damaged

    def add(self, path: str, level: str, detail: str) -> bool:
        self.findings.append(Finding(path, level, detail))
        return level != "damaged"


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _dataset(
    report: CheckReport,
    g: h5py.Group,
    key: str,
    ndim: int | None = None,
    rows: int | None = None,
    finite: bool = False,
) -> h5py.Dataset | None:
    """Check one dataset (presence, rank, rows, checksum, finiteness); None when damaged."""
    path = f"{g.name.strip('/')}/{key}".strip("/")
    try:
        ds = g.get(key)
    except Exception as exc:  # a broken link or object header
        report.add(path, "damaged", f"unreadable ({exc})")
        return None
    if not isinstance(ds, h5py.Dataset):
        report.add(path, "damaged", "missing" if ds is None else "not a dataset")
        return None
    if ndim is not None and len(ds.shape or ()) != ndim:
        report.add(path, "damaged", f"shape {ds.shape}, expected {ndim} dimensions")
        return None
    if rows is not None and ds.shape[0] != rows:
        report.add(path, "damaged", f"{ds.shape[0]} rows for {rows} probe images")
        return None
    h = hashlib.sha256()
    n_bad = 0
    try:
        for block in iter_blocks(ds):
            update_checksum(h, block)
            if finite:
                n_bad += int((~np.isfinite(block)).sum())
    except Exception as exc:  # HDF5 read/filter errors on a damaged chunk
        report.add(path, "damaged", f"values unreadable ({' '.join(str(exc).split())})")
        return None
    want = ds.attrs.get(CHECKSUM)
    if want is not None and h.hexdigest() != _s(want):
        report.add(path, "damaged", "checksum mismatch (values changed since written)")
        return None
    if n_bad:
        report.add(path, "damaged", f"{n_bad} NaN/inf values")
        return None
    if want is None:
        report.add(path, "note", "no checksum (written before checksums or by another tool)")
    else:
        report.add(path, "ok", "checksum ok")
    return ds


def _check_probe(report: CheckReport, f: h5py.File) -> None:
    g = f.get("probe")
    if not isinstance(g, h5py.Group):
        report.add("probe", "damaged", "no probe set")
        return
    images = _dataset(report, g, "images", ndim=4)
    if images is None:
        return
    n = images.shape[0]
    report.n_images = n
    names = _dataset(report, g, "names", ndim=1, rows=n)
    hashes = _dataset(report, g, "sha256", ndim=1, rows=n)
    if names is None or hashes is None:
        return
    stored = [_s(v) for v in hashes[()]]
    computed = [
        hashlib.sha256(np.ascontiguousarray(images[i]).tobytes()).hexdigest() for i in range(n)
    ]
    wrong = [i for i in range(n) if stored[i] != computed[i]]
    if wrong:
        report.add(
            "probe/images",
            "damaged",
            f"{len(wrong)} images do not match their sha256 (first: #{wrong[0]})",
        )
        return
    digest = hashlib.sha256("".join(stored).encode()).hexdigest()
    if _s(g.attrs.get("digest", "")) != digest:
        report.add("probe", "damaged", "probe digest does not match the images")
        return
    report.probe_ok = report.add("probe", "ok", f"{n} images, digest ok")


def _check_model(report: CheckReport, f: h5py.File, name: str) -> bool:
    n = report.n_images or None
    try:
        g = f["models"][name]
    except Exception as exc:
        return report.add(f"models/{name}", "damaged", f"unreadable ({exc})")
    if not isinstance(g, h5py.Group):
        return report.add(f"models/{name}", "damaged", "not a group")
    intact = True
    if "uid" not in g.attrs:
        intact = report.add(f"models/{name}", "damaged", "no uid attribute")
    maps = g.get("maps")
    if not isinstance(maps, h5py.Group) or not len(maps):
        intact = report.add(f"models/{name}/maps", "damaged", "no maps")
    else:
        for method in maps:
            intact &= _dataset(report, maps, method, ndim=3, rows=n, finite=True) is not None
    if "features" in g:
        intact &= _dataset(report, g, "features", ndim=2, rows=n, finite=True) is not None
    sketches = g.get("sketch")
    if isinstance(sketches, h5py.Group):  # derived from the maps: damage here loses no model
        for method in sketches:
            if _dataset(report, sketches, method, ndim=2, rows=n, finite=True) is None:
                report.findings[-1].detail += ("; salvage leaves it out, `onnxattr sketch` "
                                               "recomputes it from the maps")
    return intact


def check_space(path: str | Path) -> CheckReport:
    """Verify a whole space; never raises for damage inside the file (see the findings)."""
    report = CheckReport(Path(path))
    try:
        with open_space(path, "r") as f:
            _check_file(report, f)
    except OnnxAttrError as exc:  # cannot be opened as a space at all
        if report.findings or not Path(path).is_file():
            raise
        report.add("/", "damaged", str(exc))
    return report


def _check_file(report: CheckReport, f: h5py.File) -> None:
    version = f.attrs.get("format_version")
    report.add("/", "ok", f"{FORMAT} format {version} (this onnxattr reads 1-{FORMAT_VERSION})")
    _check_probe(report, f)
    models = f.get("models", {})
    if not isinstance(models, (h5py.Group, dict)):
        report.add("models", "damaged", "not a group: no model can be read")
        models = {}
    for name in models:
        if name.startswith("."):
            report.add(
                f"models/{name}",
                "note",
                "left by an interrupted writer; never linked, removed by the next add",
            )
            continue
        report.models[name] = _check_model(report, f, name)
    for key in [k for k in f if k not in ("probe", "models", "analysis")]:
        report.add(key, "note", "not part of the onnxattr layout (ignored)")
    _check_cache(report, f)


def _check_cache(report: CheckReport, f: h5py.File) -> None:
    root = f.get("analysis/estimators")
    if not isinstance(root, h5py.Group):
        return
    for key in root:
        g = root[key]
        if key.endswith((".new", ".old")):
            report.add(g.name.strip("/"), "note",
                       "left by an interrupted cache write; removed by the next `distance`")
        elif isinstance(g, h5py.Group):
            for ds in ("uids", "names", "values"):
                if _dataset(report, g, ds) is None:
                    report.findings[-1].detail += "; `onnxattr distance --no-cache` bypasses it"


def salvage(src: str | Path, dst: str | Path, overwrite: bool = False) -> CheckReport:
    """Copy the probe set and every intact model of ``src`` into a new space ``dst``."""
    src, dst = Path(src), Path(dst)
    if dst.resolve() == src.resolve():
        raise OnnxAttrError("salvage writes a new file; give another path than the damaged space")
    if dst.exists() and not overwrite:
        raise OnnxAttrError(f"{dst} exists; give a new file name (or --overwrite)")
    if not dst.parent.is_dir():
        raise OnnxAttrError(f"folder {dst.parent} does not exist; create it first")
    report = check_space(src)
    if report.damaged and report.damaged[0].path == "/":
        raise OnnxAttrError(report.damaged[0].detail)
    if not report.probe_ok:
        raise OnnxAttrError(
            f"the probe set of {src} is damaged or missing, so no model's maps can be tied to "
            "images; nothing can be salvaged (`onnxattr check` shows why)"
        )
    keep = [m for m, ok in report.models.items() if ok]
    tmp = dst.with_name(f".{dst.name}.salvage-{os.getpid()}")
    try:
        with open_space(src, "r") as f, h5py.File(tmp, "w") as out:
            out.attrs.update({k: f.attrs[k] for k in ("format", "format_version")})
            f.copy(f["probe"], out, "probe")
            models = out.create_group("models")
            for name in keep:
                f.copy(f["models"][name], models, name)
            for bad in report.damaged:  # damaged sketches of intact models (recomputable)
                parts = bad.path.split("/")
                if len(parts) == 4 and parts[2] == "sketch" and parts[1] in keep:
                    del models[parts[1]]["sketch"][parts[3]]
        copied = check_space(tmp)
        if not copied.ok:
            raise OnnxAttrError(
                f"the salvaged copy does not check out ({copied.damaged[0]}); is the disk failing?"
            )
        with space_lock(dst, write=True):
            os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
        tmp.with_name(tmp.name + ".lock").unlink(missing_ok=True)
    return report
