"""Whole-space integrity: `onnxattr check` (what is damaged) and `onnxattr salvage` (keep the rest).

`check` opens the space read-only under its shared lock and verifies, without trusting anything it
reads: the format and its version, the structure (probe set, per-model groups, shapes against the
probe), every dataset's checksum (``sha256`` attribute, over the values as read back), finite
values in maps, sketches and features, the per-image probe hashes and the probe digest. A dataset
HDF5 cannot read (a damaged chunk, a broken header) is reported, not raised.

For a segmented space it also checks every segment file against the index's manifest (present,
size and sha256 as committed) and lists files the index does not name (left by killed writers).

`salvage` copies the probe set and every intact model into a new segmented space (the pairwise
cache is left behind: it is recomputed on demand; so is a damaged sketch, derived from the maps);
each copied segment is verified before one index commit makes the copy visible. `migrate`
converts a single-file space (format 1-2) in place by the same copy, the cache included.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from . import segments
from .errors import OnnxAttrError
from .space import (
    CHECKSUM,
    FORMAT,
    FORMAT_VERSION,
    is_segmented,
    iter_blocks,
    open_space,
    signals_deferred,
    space_lock,
    update_checksum,
    verify_dataset,
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
    where: str = "",
) -> h5py.Dataset | None:
    """Check one dataset (presence, rank, rows, checksum, finiteness); None when damaged.
    ``where``: the group's path in the space (a segment's group has another name in its file)."""
    path = f"{where or g.name.strip('/')}/{key}".strip("/")
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
    images = _dataset(report, g, "images", ndim=4, where="probe")
    if images is None:
        return
    n = images.shape[0]
    report.n_images = n
    names = _dataset(report, g, "names", ndim=1, rows=n, where="probe")
    hashes = _dataset(report, g, "sha256", ndim=1, rows=n, where="probe")
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
            intact &= _dataset(report, maps, method, ndim=3, rows=n, finite=True,
                               where=f"models/{name}/maps") is not None
    if "features" in g:
        intact &= _dataset(report, g, "features", ndim=2, rows=n, finite=True,
                           where=f"models/{name}") is not None
    sketches = g.get("sketch")
    if isinstance(sketches, h5py.Group):  # derived from the maps: damage here loses no model
        for method in sketches:
            if _dataset(report, sketches, method, ndim=2, rows=n, finite=True,
                        where=f"models/{name}/sketch") is None:
                report.findings[-1].detail += ("; salvage leaves it out, `onnxattr sketch` "
                                               "recomputes it from the maps")
    return intact


def check_space(path: str | Path, salvaging: bool = False) -> CheckReport:
    """Verify a whole space; never raises for damage inside the file (see the findings).
    ``salvaging``: also an index apart from its segments folder (reading through its links)."""
    report = CheckReport(Path(path))
    try:
        with open_space(path, "r", salvaging=salvaging) as f:
            _check_file(report, f)
    except OnnxAttrError as exc:  # cannot be opened as a space at all
        if report.findings or not Path(path).is_file():
            raise
        report.add("/", "damaged", str(exc))
    return report


def _check_file(report: CheckReport, f: h5py.File) -> None:
    version = f.attrs.get("format_version")
    report.add("/", "ok", f"{FORMAT} format {version} (this onnxattr reads 1-{FORMAT_VERSION})")
    if is_segmented(f):
        _check_segments(report, f)
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


def _check_segments(report: CheckReport, f: h5py.File) -> None:
    """A segmented space's files against its manifest: each named segment present, its size and
    sha256 as committed; files the index does not name are listed. A changed segment is damage,
    but whether its model is intact (salvage keeps it) is what its datasets' checksums say."""
    try:
        manifest = segments.read_manifest(f)
    except OnnxAttrError as exc:
        report.add("/", "damaged", str(exc))
        return
    folder = Path(f.filename).with_name(manifest["folder"])
    for kind, name, entry in segments.entries(manifest):
        where = segments.link_path(kind, name)
        p = folder / entry["file"]
        if not p.is_file():
            report.add(where, "damaged", f"segment {p} is missing")
            continue
        digest, nbytes = segments.file_sha256(p)
        if (digest, nbytes) != (entry["sha256"], entry["bytes"]):
            report.add(where, "damaged", f"segment {p.name} changed since it was committed "
                       f"({nbytes} bytes, {entry['bytes']} committed; sha256 differs)")
    named = {e["file"] for _, _, e in segments.entries(manifest)}
    for p in sorted(folder.iterdir()) if folder.is_dir() else []:
        if p.name not in named:
            report.add(f"{folder.name}/{p.name}", "note",
                       "not named by the index: left by an interrupted or running writer; "
                       "the next commit deletes it once its writer is gone")


def _check_cache(report: CheckReport, f: h5py.File) -> None:
    root = f.get("analysis/estimators")
    if not isinstance(root, h5py.Group):
        return
    for key in root:
        try:
            g = root[key]
        except (KeyError, OSError) as exc:
            report.add(f"analysis/estimators/{key}", "damaged",
                       f"unreadable ({exc}); computing without the cache (`use_cache=False`) bypasses it")
            continue
        if key.endswith((".new", ".old")):
            report.add(g.name.strip("/"), "note",
                       "left by an interrupted cache write; removed by the next `distance`")
        elif isinstance(g, h5py.Group):
            for ds in ("uids", "names", "values"):
                if _dataset(report, g, ds, where=f"analysis/estimators/{key}") is None:
                    report.findings[-1].detail += "; computing without the cache (`use_cache=False`) bypasses it"


def salvage(src: str | Path, dst: str | Path, overwrite: bool = False) -> CheckReport:
    """Copy the probe set and every intact model of ``src`` into a new space ``dst`` (segmented;
    the pairwise cache is left behind, it is recomputed on demand; so are damaged sketches)."""
    src, dst = Path(src), Path(dst)
    if dst.resolve() == src.resolve():
        raise OnnxAttrError("salvage writes a new space; give another path than the damaged space")
    if dst.exists() and not overwrite:
        raise OnnxAttrError(f"{dst} exists; give a new file name (or `overwrite=True`)")
    if not dst.parent.is_dir():
        raise OnnxAttrError(f"folder {dst.parent} does not exist; create it first")
    report = check_space(src, salvaging=True)
    if report.damaged and report.damaged[0].path == "/":
        raise OnnxAttrError(report.damaged[0].detail)
    if not report.probe_ok:
        raise OnnxAttrError(
            f"the probe set of {src} is damaged or missing, so no model's maps can be tied to "
            "images; nothing can be salvaged (`onnxattr check` shows why)"
        )
    keep = [m for m, ok in report.models.items() if ok]
    drop: dict[str, list[str]] = {}  # damaged sketches of intact models (recomputable)
    for bad in report.damaged:
        parts = bad.path.split("/")
        if len(parts) == 4 and parts[2] == "sketch" and parts[1] in keep:
            drop.setdefault(parts[1], []).append(f"sketch/{parts[3]}")
    _copy_space(src, dst, keep, drop=drop, cache=False, salvaging=True)
    return report


def migrate(path: str | Path, backup: bool = True) -> tuple[int, Path | None]:
    """Convert a single-file space (format 1-2) in place into the segmented layout: every model,
    the probe set and the pairwise cache as copied, checksums unchanged. The old file is kept as
    ``PATH.single`` (``backup``). Returns (models converted, backup path)."""
    path = Path(path)
    with open_space(path) as f:
        if is_segmented(f):
            raise OnnxAttrError(f"{path} is already a segmented space (format "
                                f"{f.attrs['format_version']}); nothing to migrate")
    report = check_space(path)
    if not report.ok:
        raise OnnxAttrError(
            f"{path} has damage ({report.damaged[0].path}: {report.damaged[0].detail}); "
            f"`onnxattr salvage {path} NEW.h5` copies what is intact into a segmented space")
    old = path.with_name(path.name + ".single")
    if backup and old.exists():
        raise OnnxAttrError(f"{old} exists (an earlier backup?); move it away or pass `backup=False`")
    models = sorted(report.models)
    _copy_space(path, path, models, cache=True, backup=old if backup else None)
    return len(models), old if backup else None


def _copy_space(src: Path, dst: Path, models: list[str], *, cache: bool,
                drop: dict[str, list[str]] | None = None, backup: Path | None = None,
                salvaging: bool = False) -> None:
    """Write ``src``'s probe set, ``models`` (less the ``drop`` paths) and, with ``cache``, its
    pairwise cache as segments of ``dst``, verify each, and commit them as ``dst``'s new index.
    ``dst`` may be ``src`` (migrate): its file is then replaced by the index, atomically, after
    being hard-linked (or copied) to ``backup``."""
    drop = drop or {}
    written: list[segments.Change] = []

    def copier(f: h5py.File, where: str, remove: list[str]) -> Any:
        def fill(out: h5py.File, group: str) -> None:
            f.copy(f[where], out, group)
            for p in remove:
                del out[group][p]
        return fill

    try:
        with open_space(src, salvaging=salvaging) as f:
            attrs = {"created": _s(f.attrs.get("created", segments.now()))}
            stamp = os.stat(src).st_mtime_ns
            items = [("probe", "", "probe")] + [("model", m, f"models/{m}") for m in models]
            if cache and isinstance(f.get("analysis/estimators"), h5py.Group):
                items += [("cache", k, f"analysis/estimators/{k}") for k in f["analysis/estimators"]
                          if not k.endswith((".new", ".old"))]
            for kind, name, where in items:
                seg = segments.write_segment(dst, kind, name, copier(f, where, drop.get(name, [])))
                written.append(segments.Change(kind, name, seg))
        for c in written:
            _verify_segment(c.segment.tmp)
        with space_lock(dst, write=True), signals_deferred():
            if dst == src and os.stat(src).st_mtime_ns != stamp:
                raise OnnxAttrError(f"{src} changed while it was being converted; run it again")
            if backup is not None:
                _keep_backup(src, backup)
            segments.commit_changes(dst, segments.empty_manifest(dst), written, {
                "format": FORMAT, "format_version": FORMAT_VERSION, "layout": segments.LAYOUT,
                **attrs})
    except BaseException:
        segments.discard([c.segment for c in written])
        raise


def _verify_segment(path: Path) -> None:
    """Every dataset of a just-written segment reads back equal to its checksum."""
    with h5py.File(path, "r") as f:
        def visit(_: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset):
                verify_dataset(obj)
        f.visititems(visit)


def _keep_backup(path: Path, backup: Path) -> None:
    try:
        os.link(path, backup)
    except OSError:  # no hard links here (some network or FAT file systems): copy
        shutil.copy2(path, backup)
