"""The space's durable layer: immutable segment files, named by an index that is replaced whole.

A format-3 space is an index file (``space.h5``) and a folder of segments beside it
(``space.h5.d/``). Each model, the probe set and each pairwise-cache entry is one HDF5 segment,
written once under a temporary name, fsynced, and never modified again. The index is a small HDF5
file of external links (``/models/<name>`` -> ``space.h5.d/<file>:/model``, ``/probe``,
``/analysis/estimators/<key>``) plus a JSON manifest of every segment's file name, size and sha256,
so plain h5py reads a space through it as before.

A change becomes visible in one step: under the space's exclusive lock, new segments get their final
names, a new index is written beside the old one, fsynced, and `os.replace`d over it. A failure at
any byte before that replace leaves the old index, which names only complete segments; after it, the
new one. So a failing disk, a quota, a per-file size limit or a kill loses at most the change being
made. Segments are written outside the lock (writers on many processes or machines write in
parallel; only the index commit is serialised), and segments the index no longer names are deleted
at the next commit, so `remove` frees disk at once.

Files are built in memory (:func:`h5_image`) and every write goes through :func:`create`,
:func:`write`, :func:`fsync`, :func:`replace` and :func:`fsync_dir`: the one seam where tests
inject ENOSPC, EIO, EDQUOT or EFBIG at any single write.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import socket
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py

from .errors import OnnxAttrError, OnnxAttrWarning

SEGMENT_FORMAT = "onnxattr-segment"
LAYOUT = "segments"
# where each kind of segment is linked in the index, and the group the segment file holds it in
KINDS = {"probe": ("probe", "/probe"), "model": ("models/{}", "/model"),
         "cache": ("analysis/estimators/{}", "/cache")}
_TMP = ".tmp-"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def segment_dir(index: Path) -> Path:
    """The folder of the space's segments: ``<index file name>.d`` beside it."""
    return index.with_name(index.name + ".d")


def check_folder(f: h5py.File) -> None:
    """Refuse an index whose segments folder is not its own: one copied or renamed without its
    folder would read, and on its next write delete, another space's segments."""
    index = Path(f.filename)
    folder = read_manifest(f)["folder"]
    if folder != segment_dir(index).name:
        raise OnnxAttrError(
            f"{index} belongs with the segments folder {folder!r}, not "
            f"{segment_dir(index).name!r}: it was copied or renamed apart from it. Move or copy "
            f"a space as its file and folder under their own names; for a copy under a new name, "
            f"`onnxattr salvage {index} NEW.h5`")


# -- the I/O seam ------------------------------------------------------------------------
WRITE_BLOCK = 1 << 20  # bytes per write call


def h5_image(build: Callable[[h5py.File], None]) -> bytes:
    """The bytes of an HDF5 file that ``build`` fills, made in memory (HDF5's core driver).

    HDF5 never writes to disk in a commit: a disk error inside HDF5's own I/O leaves its
    metadata cache in a state where closing the file can crash the process (seen with EFBIG),
    so files are built in memory and written with plain, checked writes."""
    with h5py.File(f"mem-{uuid.uuid4().hex}.h5", "w", driver="core", backing_store=False) as f:
        build(f)
        f.flush()
        return f.id.get_file_image()


def create(path: Path) -> int:
    """A new file for writing (never an existing one: a name clash is a bug, not a retry)."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)


def write(fd: int, data: memoryview) -> int:
    return os.write(fd, data)


def fsync(fd: int) -> None:
    os.fsync(fd)


def write_file(path: Path, data: bytes) -> None:
    """``data`` to a new file, every byte written and fsynced, or the file deleted and the
    OS error raised."""
    fd = create(path)
    try:
        view, done = memoryview(data), 0
        while done < len(view):
            done += write(fd, view[done:done + WRITE_BLOCK])
        fsync(fd)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)


def replace(src: Path, dst: Path) -> None:
    os.replace(src, dst)


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable (where the OS supports it on folders)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EBADF):  # folders that cannot be fsynced
            raise
    finally:
        os.close(fd)


class WriteFailed(OSError):
    """A segment or index write failed; ``cause`` is the OS error behind it."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def describe(exc: BaseException) -> str:
    """The OS-level reason of a failed write, in one line."""
    cause = exc.cause if isinstance(exc, WriteFailed) else exc
    if isinstance(cause, OSError) and cause.errno:
        return f"{os.strerror(cause.errno)} [{errno.errorcode.get(cause.errno, cause.errno)}]"
    return " ".join(str(cause).split()) or type(cause).__name__


# -- segments ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Segment:
    """A written segment: its file in the segment folder (temporary until committed), its final
    name, size and the sha256 of its bytes."""

    tmp: Path
    final: str
    sha256: str
    nbytes: int

    def entry(self) -> dict[str, Any]:
        return {"file": self.final, "sha256": self.sha256, "bytes": self.nbytes}


def file_sha256(path: Path) -> tuple[str, int]:
    h, n = hashlib.sha256(), 0
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
            n += len(block)
    return h.hexdigest(), n


def write_segment(index: Path, kind: str, name: str,
                  fill: Callable[[h5py.File, str], None]) -> Segment:
    """Write one segment: ``fill(file, group)`` creates (or copies in) the group ``model``,
    ``probe`` or ``cache`` of a new file in the segment folder, which is fsynced and read back
    for its sha256. Invisible until :func:`commit_changes` links it; a failure deletes the file
    and raises."""
    folder = segment_dir(index)
    stem = f"{kind}-{_UNSAFE.sub('_', name)[:64]}" if name else kind
    tag = uuid.uuid4().hex[:12]
    tmp = folder / f"{_TMP}{socket.gethostname()}-{os.getpid()}-{tag}.h5"
    group = KINDS[kind][1].strip("/")

    def build(f: h5py.File) -> None:
        f.attrs.update(format=SEGMENT_FORMAT, kind=kind, name=name)
        fill(f, group)
        if not isinstance(f.get(group), h5py.Group):
            raise ValueError(f"a {kind} segment was built without its /{group} group")

    data = h5_image(build)
    try:
        if not folder.is_dir():
            folder.mkdir(exist_ok=True)  # another writer may make it at the same time
            fsync_dir(folder.parent)
        write_file(tmp, data)
    except OSError as exc:
        raise WriteFailed(exc) from exc
    digest, nbytes = hashlib.sha256(data).hexdigest(), len(data)
    return Segment(tmp, f"{stem}-{tag}.h5", digest, nbytes)


def discard(segments: Sequence[Segment]) -> None:
    """Delete written segments that will not be committed."""
    for s in segments:
        s.tmp.unlink(missing_ok=True)


# -- the index -----------------------------------------------------------------------------
@dataclass
class Change:
    """One edit of the index: ``segment`` linked as ``kind``/``name``, or, with None, unlinked."""

    kind: str
    name: str
    segment: Segment | None


def empty_manifest(index: Path) -> dict[str, Any]:
    return {"folder": segment_dir(index).name, "probe": None, "models": {}, "cache": {}}


def read_manifest(f: h5py.File) -> dict[str, Any]:
    """The manifest of an open format-3 index; raises OnnxAttrError if it cannot be parsed."""
    raw = f.attrs.get("manifest")
    try:
        manifest = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
        if not isinstance(manifest.get("models"), dict) or not isinstance(manifest.get("cache"), dict):
            raise ValueError("models or cache is not a table")
        manifest.setdefault("folder", Path(f.filename).name + ".d")
    except (ValueError, TypeError, AttributeError) as exc:
        raise OnnxAttrError(f"{f.filename}: the index's manifest is unreadable ({exc}); "
                            f"`onnxattr check {f.filename}` says what is intact") from None
    return manifest


def entries(manifest: Mapping[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(kind, name, entry) of every segment the manifest names."""
    if manifest.get("probe"):
        yield "probe", "", manifest["probe"]
    for name, e in manifest["models"].items():
        yield "model", name, e
    for key, e in manifest["cache"].items():
        yield "cache", key, e


def link_path(kind: str, name: str) -> str:
    return KINDS[kind][0].format(name)


def apply(manifest: dict[str, Any], changes: Sequence[Change]) -> dict[str, Any]:
    out = json.loads(json.dumps(manifest))
    for c in changes:
        entry = c.segment.entry() if c.segment else None
        if c.kind == "probe":
            out["probe"] = entry
        else:
            table = out["models" if c.kind == "model" else "cache"]
            if entry is None:
                table.pop(c.name, None)
            else:
                table[c.name] = entry
    return out


def write_index(index: Path, manifest: Mapping[str, Any], attrs: Mapping[str, Any]) -> Path:
    """Write a complete new index beside ``index`` (fsynced); the caller replaces ``index``."""
    tmp = index.with_name(f"{index.name}{_TMP}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    folder = manifest["folder"]

    def build(f: h5py.File) -> None:
        f.attrs.update(attrs)
        f.attrs["manifest"] = json.dumps(manifest, sort_keys=True)
        f.create_group("models")
        for kind, name, e in entries(manifest):
            f[link_path(kind, name)] = h5py.ExternalLink(f"{folder}/{e['file']}", KINDS[kind][1])

    try:
        write_file(tmp, h5_image(build))
    except OSError as exc:
        raise WriteFailed(exc) from exc
    return tmp


def collect_garbage(index: Path, manifest: Mapping[str, Any]) -> None:
    """Delete segments the index does not name: replaced or removed ones, and those a killed
    commit renamed but never linked. Runs under the exclusive lock, so no commit is half-way;
    temporary files are left to their writers unless the writer (a process of this host) is gone."""
    folder = index.with_name(manifest["folder"])
    if not folder.is_dir():
        return
    named = {e["file"] for _, _, e in entries(manifest)}
    host = socket.gethostname()
    for p in folder.iterdir():
        if p.name in named:
            continue
        if p.name.startswith(_TMP):
            if not _writer_gone(p.name[len(_TMP):], host):
                continue
        try:
            p.unlink()
        except OSError:
            pass  # read-only or vanished: the next commit tries again; `check` lists leftovers


def _writer_gone(tag: str, host: str) -> bool:
    """Whether the process that is writing a temporary segment (``host-pid-uuid.h5``) has died."""
    parts = tag.rsplit("-", 2)
    if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def commit_changes(index: Path, manifest: dict[str, Any], changes: Sequence[Change],
                   attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Make ``changes`` visible: final names for the new segments, a new index replacing the old
    one, then the unreferenced segments deleted. The caller holds the exclusive lock; on failure
    the old index stands and the new segments are deleted."""
    folder = index.with_name(manifest["folder"])
    new = [c.segment for c in changes if c.segment is not None]
    renamed: list[Path] = []
    try:
        for s in new:
            replace(s.tmp, folder / s.final)
            renamed.append(folder / s.final)
        if new:
            fsync_dir(folder)
        updated = apply(manifest, changes)
        tmp = write_index(index, updated, {**attrs, "updated": now()})
        try:
            replace(tmp, index)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except BaseException as exc:
        discard(new)
        for p in renamed:
            p.unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, WriteFailed):
            raise WriteFailed(exc) from exc
        raise
    try:  # committed: readers see the new index; a failure here costs durability, not data
        fsync_dir(index.parent)
    except OSError as exc:
        warnings.warn(f"{index}: committed, but the folder could not be synced to disk "
                      f"({describe(exc)}); a power loss now may undo this change",
                      OnnxAttrWarning, stacklevel=3)
    collect_garbage(index, updated)
    return updated


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
