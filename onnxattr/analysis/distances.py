"""Pairwise model affinities and distances over a model space, cached and updated incrementally.

Every estimator here is *pairwise over models*: it turns a model's stored data (attribution maps or
encoder features) into a signature and combines two signatures into one number. The engine in this
module evaluates only the pairs that are missing from the cache kept under
``/analysis/estimators/<key>`` of the space, so adding one model to N costs N pairs, not N².
The cache is keyed by each model's ``uid`` attribute (new on every ``add``), so a model removed and
re-added under the same name is recomputed. Signatures are built in parts (probe-image chunks for
maps) so peak memory stays near ``memory_bytes`` whatever the number of models or images.

The attribution-map affinity is the paper's: per probe image, the cosine of two flattened (S, S)
maps; affinity = mean over images; distance = Np / sum_k cos = 1 / affinity, capped at 100 where
the affinity is 0.01 or less (see :func:`affinity_to_distance`). A zero map (all-zero
attribution, e.g. a dead encoder) has no direction: its cosine with anything is taken as 0.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import hdf5plugin  # noqa: F401  (registers the HDF5 filters of compressed maps)
import numpy as np

from ..errors import OnnxAttrError
from ..space_reader import CACHE_GROUP, SpaceReader, read_space

CACHE_ROOT = CACHE_GROUP
CACHE_FORMAT = 1
DEFAULT_MEMORY_BYTES = 1 << 30
CACHE_LOCK_WAIT = 10.0  # seconds a distance command waits to store its new pairs


# --------------------------------------------------------------------------- labelled matrices
@dataclass
class LabelledMatrix:
    """A square model x model matrix; ``kind`` says whether higher ("affinity") or lower
    ("distance") means more similar."""

    names: list[str]
    values: np.ndarray
    kind: str = "affinity"
    estimator: str = ""
    excluded: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float64)
        n = len(self.names)
        if self.values.shape != (n, n):
            raise OnnxAttrError(
                f"matrix is {self.values.shape} but has {n} names; give one name per row and column"
            )
        if len(set(self.names)) != n:
            raise OnnxAttrError("matrix has duplicate model names; make names unique")
        if self.kind not in ("affinity", "distance"):
            raise OnnxAttrError(f"unknown matrix kind {self.kind!r}; use affinity or distance")

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise OnnxAttrError(
                f"model {name!r} is not in the matrix; known: {', '.join(self.names)}"
            ) from None

    def affinity(self) -> LabelledMatrix:
        if self.kind == "affinity":
            return self
        return LabelledMatrix(self.names, distance_to_affinity(self.values), "affinity",
                              self.estimator, list(self.excluded))

    @property
    def has_distance(self) -> bool:
        """Whether this matrix has a distance (:func:`has_distance` of its estimator)."""
        return self.kind == "distance" or has_distance(self.estimator)

    def distance(self) -> LabelledMatrix:
        if self.kind == "distance":
            return self
        if not self.has_distance:
            raise OnnxAttrError(
                f"{self.estimator} has no distance (d = 1/a applies to similarities such as "
                "cosines, not to z-scores or centred affinities); use its affinities, where "
                "higher means more similar"
            )
        return LabelledMatrix(self.names, affinity_to_distance(self.values), "distance",
                              self.estimator, list(self.excluded))

    def scores(self) -> np.ndarray:
        """Higher = more similar, whatever the kind (ranks are what matter downstream)."""
        return self.values if self.kind == "affinity" else -self.values


def has_distance(estimator: str) -> bool:
    """Whether the paper's d = 1/a means something for ``estimator``'s affinities: it does for
    similarities such as cosines, not for a combination (sums of z-scores) or a centred affinity
    (``+hub``, ``+cslsK``), which are negative for most pairs (d = 1/a gave 0.83 for the top
    source and the cap for every other), nor for a directed estimator (``predict``'s R² is
    negative where a source predicts worse than the mean; ``rankme`` scores sources, not pairs).
    The one rule the API and the CLI both follow."""
    from .estimators import COMBINE_PREFIX, ESTIMATORS
    from .map_compare import parse_estimator

    if estimator.startswith(COMBINE_PREFIX):
        return False
    try:
        spec = parse_estimator(estimator)
    except OnnxAttrError:  # a label parse_estimator does not read (a CSV's, "depara:x@lam1")
        return True
    reg = ESTIMATORS.get(spec.base.split(":")[0], None)
    return not spec.correction and not (reg is not None and reg.directed)


#: Affinities at or below this floor carry no measurable similarity; their distance is the cap.
AFFINITY_FLOOR = 0.01
#: The largest distance: 1 / AFFINITY_FLOOR.
DISTANCE_CAP = 1.0 / AFFINITY_FLOOR


def affinity_to_distance(aff: np.ndarray) -> np.ndarray:
    """d = 1 / a, the paper's d = Np / sum_k cos for map affinities, capped at DISTANCE_CAP (100).

    The paper's formula is undefined for a <= 0 (the maps are on average orthogonal or opposed)
    and grows without bound as a -> 0, where differences mean nothing. So d = 1 / max(a, 0.01):
    every affinity <= 0.01 ("no measurable similarity") maps to d = 100, and no distance is
    infinite. Rankings are unaffected above the floor (d is decreasing in a); below it, models
    tie. NaN (not measured) stays NaN.
    """
    aff = np.asarray(aff, dtype=np.float64)
    return np.where(np.isnan(aff), np.nan, 1.0 / np.maximum(np.nan_to_num(aff), AFFINITY_FLOOR))


def distance_to_affinity(dist: np.ndarray) -> np.ndarray:
    """Inverse of :func:`affinity_to_distance` on its range: a = 1 / d (the cap gives the floor);
    d = inf, as older versions wrote for a <= 0, gives 0."""
    dist = np.asarray(dist, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(np.isnan(dist), np.nan,
                        np.where(dist > 0, 1.0 / np.where(dist > 0, dist, 1.0), 0.0))


def read_labelled_csv(path: str | Path) -> tuple[list[str], list[str], np.ndarray]:
    """Read a CSV: header row = column names, first column = row names, empty cell = NaN."""
    path = Path(path)
    if not path.is_file():
        raise OnnxAttrError(f"matrix file {path} does not exist; give an existing CSV file")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = [r for r in csv.reader(fh) if r]
    except UnicodeDecodeError as exc:
        raise OnnxAttrError(
            f"{path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
            "save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"
        ) from None
    except csv.Error as exc:
        raise OnnxAttrError(f"{path} is not a readable CSV file ({exc})") from None
    if len(rows) < 2:
        raise OnnxAttrError(f"{path} has no data rows; expected a header row and one row per model")
    cols = [c.strip() for c in rows[0][1:]]
    if dup := sorted({c for c in cols if cols.count(c) > 1}):
        raise OnnxAttrError(f"{path}: column names appear twice: {', '.join(dup)}; make them unique")
    names, vals = [], []
    for i, r in enumerate(rows[1:], start=2):
        if len(r) != len(cols) + 1:
            raise OnnxAttrError(
                f"{path} line {i} has {len(r) - 1} values for {len(cols)} columns; fix the CSV"
            )
        names.append(r[0].strip())
        try:
            vals.append([float(x) if x.strip() else math.nan for x in r[1:]])
        except ValueError as exc:
            raise OnnxAttrError(f"{path} line {i}: {exc}; cells must be numbers or empty") from None
    if dup := sorted({n for n in names if names.count(n) > 1}):
        raise OnnxAttrError(f"{path}: row names appear twice: {', '.join(dup)}; make them unique")
    return names, cols, np.array(vals, dtype=np.float64)


def read_matrix_csv(path: str | Path, kind: str = "affinity") -> LabelledMatrix:
    """Read a labelled square matrix (same names, same order, in header and first column)."""
    rows, cols, vals = read_labelled_csv(path)
    if rows != cols:
        raise OnnxAttrError(
            f"{path}: row names and column names differ; a labelled square matrix is expected"
        )
    return LabelledMatrix(rows, vals, kind, estimator=Path(path).stem)


def write_matrix(matrix: LabelledMatrix, path: str | Path) -> Path:
    """Write a labelled matrix; the format follows the suffix (.csv, .npy, .json)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["model", *matrix.names])
            for name, row in zip(matrix.names, matrix.values, strict=True):
                w.writerow([name, *(_num(v) for v in row)])
    elif suffix == ".npy":
        np.save(path, matrix.values)
    elif suffix == ".json":
        vals = [[float(_num(v)) if math.isfinite(v) else None for v in row]
                for row in matrix.values.tolist()]
        path.write_text(json.dumps({"names": matrix.names, "kind": matrix.kind,
                                    "estimator": matrix.estimator, "values": vals}, indent=1))
    else:
        raise OnnxAttrError(f"unknown matrix format {suffix!r} for {path}; use .csv, .npy or .json")
    return path


def _num(v: float) -> str:
    """7 significant digits: what float32 maps and features carry (no 0.30000001192092896)."""
    return f"{float(v):.7g}"


def ranking(matrix: LabelledMatrix, target: str) -> list[tuple[str, float]]:
    """Source models for ``target``, most similar first, with their values (target excluded).
    Ties keep matrix order so results are reproducible."""
    i = matrix.index(target)
    scores = matrix.scores()[i]
    order = [j for j in np.argsort(-scores, kind="stable") if j != i]
    return [(matrix.names[j], float(matrix.values[i, j])) for j in order]


# --------------------------------------------------------------------------- per-image cosine
def normalise_rows(x: np.ndarray) -> np.ndarray:
    """Unit-norm rows; all-zero rows stay zero so their cosine with anything is 0 (not NaN)."""
    x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


# --------------------------------------------------------------------------- the pairwise engine
class PairwiseEstimator(Protocol):
    """What the engine needs from an estimator (see :mod:`onnxattr.analysis.estimators`); it
    reads the space only through the :class:`~onnxattr.space_reader.SpaceReader` it is given."""

    name: str
    cache_key: str  # also says how results were made: params are stored with the cache

    def models_with_data(self, reader: SpaceReader) -> list[str]: ...

    def parts(self, reader: SpaceReader, names: Sequence[str], memory_bytes: int) -> list[Any]: ...

    def signature_bytes(self, reader: SpaceReader, name: str, part: Any) -> int: ...

    def n_images(self, reader: SpaceReader, name: str) -> int:
        """How many probe images model ``name``'s data covers."""

    def verify(self, reader: SpaceReader, name: str) -> None:
        """Raise if the data of model ``name`` that its signatures are built from is damaged."""

    def stack(self, reader: SpaceReader, names: Sequence[str], part: Any) -> Any:
        """The signatures of ``names`` for ``part``, as one block."""

    def combine(self, a: Any, b: Any) -> np.ndarray:
        """Pair values (len(a), len(b)) of two blocks; summed over parts by the engine."""


def _read_cache(reader: SpaceReader, key: str, digest: str) -> tuple[list[str], np.ndarray]:
    entry = reader.cached_pairs(key)
    if entry is None:
        return [], np.zeros((0, 0))
    attrs, uids, values = entry
    if attrs.get("format") != CACHE_FORMAT or attrs.get("probe_digest", "") != digest:
        return [], np.zeros((0, 0))  # stale: another probe set or layout -> recompute everything
    return uids, values


def _update_cache(space: Path, est: PairwiseEstimator, digest: str, uids: list[str],
                  names: list[str], values: np.ndarray) -> None:
    """Store the matrix as the estimator's cache entry (a segment of its own, replaced whole); a
    space busy for long is left alone (the cache only saves time), and a space that changed
    meanwhile keeps its cache for its own models."""
    from ..space import ModelSpace

    attrs = {"format": CACHE_FORMAT, "estimator": est.name, "probe_digest": digest,
             "params": json.dumps(getattr(est, "params", None) or {}, sort_keys=True)}
    try:
        ModelSpace(space).write_cache(est.cache_key, uids, names, values, attrs, digest,
                                      lock_wait=CACHE_LOCK_WAIT)
    except (OnnxAttrError, OSError) as exc:  # busy, read-only, a failing disk: serve anyway
        print(f"note: pairwise cache not updated ({exc})", file=sys.stderr)


def _blocks(reader: SpaceReader, est: PairwiseEstimator, names: Sequence[str], part: Any,
            budget: int) -> Iterator[list[str]]:
    """Split names into groups whose signatures for ``part`` fit in ``budget`` bytes."""
    block: list[str] = []
    used = 0
    for n in names:
        size = est.signature_bytes(reader, n, part)
        if block and used + size > budget:
            yield block
            block, used = [], 0
        block.append(n)
        used += size
    if block:
        yield block


def compute_pairs(reader: SpaceReader, est: PairwiseEstimator, new: Sequence[str], names: Sequence[str],
                  memory_bytes: int = DEFAULT_MEMORY_BYTES, progress: bool = False) -> np.ndarray:
    """Values for every (new, names) pair, summed over the estimator's parts.

    The signatures of a block of ``new`` models are held while the other models stream past in
    blocks, so each signature is built once per part when the new ones fit in half the budget.
    """
    from rich.progress import Progress

    out = np.zeros((len(new), len(names)))
    col = {n: j for j, n in enumerate(names)}
    row = {n: i for i, n in enumerate(new)}
    parts = est.parts(reader, names, memory_bytes)
    # the held block and one streamed block stay within memory_bytes / 2 each
    half = max(1, memory_bytes // 2)
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"{est.name}: {len(new)} x {len(names)} pairs", total=len(parts))
        for part in parts:
            for held in _blocks(reader, est, new, part, half):
                block_a = est.stack(reader, held, part)
                a_rows = [row[n] for n in held]
                # the held block against itself (symmetric product), then the others streamed
                out[np.ix_(a_rows, [col[n] for n in held])] += est.combine(block_a, block_a)
                held_set = set(held)
                others = [n for n in names if n not in held_set]
                for blk in _blocks(reader, est, others, part, half):
                    out[np.ix_(a_rows, [col[n] for n in blk])] += est.combine(
                        block_a, est.stack(reader, blk, part))
                del block_a
            bar.advance(task)
    return out


def select_models(reader: SpaceReader, est: Any, models: Sequence[str] | None
                  ) -> tuple[list[str], list[str]]:
    """The models ``est`` compares (``models``, else every one with its data) and those left out
    for lack of data; unknown names, named models without the data, or fewer than two are errors."""
    space = reader.path
    all_models = reader.names()
    have = est.models_with_data(reader)
    if models is None:
        names, excluded = have, [m for m in all_models if m not in have]
    else:
        names, excluded = list(models), []
        unknown = [m for m in names if m not in all_models]
        if unknown:
            raise OnnxAttrError(f"models not in {space}: {', '.join(unknown)}; "
                                f"available: {', '.join(all_models) or '(none)'}")
        lacking = [m for m in names if m not in have]
        if lacking:
            raise OnnxAttrError(f"models without data for {est.name!r}: {', '.join(lacking)}; "
                                "re-add them with that method or leave them out")
    if len(names) < 2:
        hint = getattr(est, "missing_hint", "")
        raise OnnxAttrError(f"{est.name!r} needs at least two models with its data in {space}; "
                            f"found {len(names)}" + (f" ({hint})" if hint else ""))
    return names, excluded


def pairwise_matrix(space: str | Path, est: PairwiseEstimator, models: Sequence[str] | None = None,
                    *, use_cache: bool = True, memory_bytes: int = DEFAULT_MEMORY_BYTES,
                    progress: bool = False) -> tuple[LabelledMatrix, dict[str, int]]:
    """The estimator's model x model matrix, computing only pairs missing from the space's cache.

    Returns the matrix and stats ``{"computed_pairs": ..., "cached_models": ...}``.
    ``models=None`` means every model that has the estimator's data; the others are listed in
    ``matrix.excluded``.
    """
    space = Path(space)
    if not space.is_file():
        raise OnnxAttrError(f"model space {space} does not exist; create it with `onnxattr add`")
    # Read under the shared lock; the cache is written afterwards under the exclusive one.
    with read_space(space) as reader:
        names, excluded = select_models(reader, est, models)
        uids = [reader.uid(n) for n in names]
        digest = reader.probe_digest()
        if not digest:
            raise OnnxAttrError(f"{space} has no probe set (damaged or edited), so its maps "
                                f"cannot be compared safely; `onnxattr check {space}`")
        cached_uids, cached = (_read_cache(reader, est.cache_key, digest) if use_cache
                               else ([], None))
        pos = {u: i for i, u in enumerate(cached_uids)}
        known = [i for i, u in enumerate(uids) if u in pos]
        new = [names[i] for i, u in enumerate(uids) if u not in pos]
        values = np.full((len(names), len(names)), np.nan)
        if known:
            idx = [pos[uids[i]] for i in known]
            values[np.ix_(known, known)] = cached[np.ix_(idx, idx)]
        if new:
            for n in names:  # every model's data enters the new pairs: check it is intact
                est.verify(reader, n)
            block = compute_pairs(reader, est, new, names, memory_bytes, progress)
            rows = [names.index(n) for n in new]
            values[rows, :] = block
            values[:, rows] = block.T
    if use_cache and new and os.access(space, os.W_OK):  # a read-only space: use, don't update
        _update_cache(space, est, digest, uids, names, values)
    stats = {"computed_pairs": len(new) * len(names) - len(new) * (len(new) - 1) // 2,
             "cached_models": len(known)}
    return LabelledMatrix(names, exact_unit_diagonal(values), "affinity", est.name, excluded), stats


def exact_unit_diagonal(values: np.ndarray, tol: float = 1e-5) -> np.ndarray:
    """A model's affinity with itself is 1 by definition (cosine, CKA, correlation of a nonzero
    signature with itself); float32 products give 1 ± 1e-7, which users then read as
    1.0000001788. Diagonal entries within ``tol`` of 1 are set to exactly 1. (A model whose maps
    are all zero keeps its true self-affinity, the fraction of nonzero maps.)"""
    values = np.array(values, dtype=np.float64)
    d = np.diagonal(values).copy()
    near = np.abs(d - 1.0) <= tol
    idx = np.flatnonzero(near)
    values[idx, idx] = 1.0
    return values
