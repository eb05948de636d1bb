"""Measured transfer: every source of a space → each target task, with the one head recipe.

Scores are cached per (source uid, target digest, recipe version, split seed) as one small JSON
file each, so adding a source to the space computes only its column. The space is only read.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..analysis.distances import read_labelled_csv
from ..errors import OnnxAttrError
from .data import TargetTask
from .heads import RECIPE_VERSION, SceneStats, fit_score, recipe
from .sources import SpaceSource, check_batch_size, load_sources


@dataclass
class TransferScore:
    source: str
    target: str
    score: float
    metric: str
    val_score: float
    alpha: float
    n_train: int
    n_val: int
    n_test: int
    seconds: float
    cached: bool = False


@dataclass
class TransferResult:
    targets: list[TargetTask]
    sources: list[str]
    scores: dict[tuple[str, str], TransferScore]  # (target, source) -> score
    settings: dict[str, Any]
    written: list[Path] = field(default_factory=list)  # files the API call wrote
    scenes: dict[tuple[str, str], SceneStats] = field(default_factory=dict)  # with scenes=True

    def matrix(self) -> np.ndarray:
        """targets × sources, higher = better."""
        return np.array(
            [[self.scores[(t.name, s)].score for s in self.sources] for t in self.targets]
        )


def default_cache(space: str | Path) -> Path:
    space = Path(space)
    return space.with_name(space.name + ".transfer-cache")


def _cache_file(cache: Path, uid: str, target: TargetTask, seed: int) -> Path:
    key = hashlib.sha256(f"{uid}|{target.digest}|{RECIPE_VERSION}|{seed}".encode()).hexdigest()
    return cache / f"{key[:32]}.json"


def _write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def measure_transfer(
    space: str | Path,
    targets: Sequence[TargetTask],
    sources: Sequence[str] | Sequence[SpaceSource] | None = None,
    cache: str | Path | None = None,
    use_cache: bool = True,
    seed: int = 0,
    batch_size: int = 64,
    log: Callable[[str], None] | None = None,
    scenes: bool = False,
) -> TransferResult:
    """Transfer score of every source (default: all models of the space) to every target.

    Every source is checked (ONNX file present, sha256 as recorded) before anything runs;
    `sources` may also be the already checked result of :func:`load_sources`. `scenes`: also
    each score's per-test-scene sums (`SceneStats`, for a test-scene bootstrap); the cache keeps
    scores only, so every pair is measured.
    """
    say = log or (lambda *_: None)
    check_batch_size(batch_size)
    if not targets:
        raise OnnxAttrError("no target task given")
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise OnnxAttrError(f"target names must be unique: {names}")
    srcs = (
        list(sources)
        if sources and isinstance(sources[0], SpaceSource)
        else load_sources(space, list(sources) if sources else None)
    )
    cache_dir = Path(cache) if cache is not None else default_cache(space)
    scores: dict[tuple[str, str], TransferScore] = {}
    stats: dict[tuple[str, str], SceneStats] = {}
    t_all = time.perf_counter()
    for i, src in enumerate(srcs, 1):
        t0 = time.perf_counter()
        features: dict[str, np.ndarray] = {}
        designs: dict[str, dict] = {}  # per image set: head designs shared by its targets
        n_cached = 0
        for t in targets:
            path = _cache_file(cache_dir, src.uid, t, seed)
            if use_cache and not scenes and path.is_file():
                try:
                    rec = json.loads(path.read_text())
                    scores[(t.name, src.name)] = TransferScore(
                        **{**rec, "source": src.name, "target": t.name, "cached": True}
                    )
                    n_cached += 1
                    continue
                except (OSError, ValueError, TypeError):
                    pass  # unreadable cache entry: measure again and overwrite it
            if t.images_digest not in features:
                features[t.images_digest] = src.runner.run(t.images, batch_size)
            ts = time.perf_counter()
            head = fit_score(
                features[t.images_digest],
                t.y,
                t.kind,
                t.n_outputs,
                seed,
                designs.setdefault(t.images_digest, {}),
                scenes=scenes,
            )
            if head.scenes is not None:
                stats[(t.name, src.name)] = head.scenes
            sc = TransferScore(
                src.name,
                t.name,
                head.score,
                head.metric,
                head.val_score,
                head.alpha,
                head.n_train,
                head.n_val,
                head.n_test,
                time.perf_counter() - ts,
            )
            scores[(t.name, src.name)] = sc
            if use_cache:
                _write_json_atomic(
                    path,
                    {
                        k: v
                        for k, v in asdict(sc).items()
                        if k not in ("source", "target", "cached")
                    },
                )
        say(
            f"[{i}/{len(srcs)}] {src.name}: {len(targets) - n_cached} measured, {n_cached} "
            f"cached ({time.perf_counter() - t0:.1f} s)"
        )
    settings = {
        "recipe": recipe(),
        "seed": seed,
        "space": str(space),
        "sources": {s.name: {"uid": s.uid, "onnx_path": str(s.onnx_path)} for s in srcs},
        "seconds": time.perf_counter() - t_all,
    }
    return TransferResult(list(targets), [s.name for s in srcs], scores, settings, scenes=stats)


def merge_labelled_csv(csv_path: Path, new: dict[str, dict[str, float]],
                       corner: str = "target") -> None:
    """Write ``new`` (row -> column -> value) into the labelled CSV at ``csv_path``: its cells
    replace those already there, other rows and columns are kept; NaN is an empty cell."""
    rows: dict[str, dict[str, float]] = {}
    if csv_path.is_file():
        old_t, old_s, old_v = read_labelled_csv(csv_path)
        rows = {t: {s: float(v) for s, v in zip(old_s, r)} for t, r in zip(old_t, old_v)}
    for t, r in new.items():
        rows.setdefault(t, {}).update(r)
    cols = list(dict.fromkeys(c for r in rows.values() for c in r))
    lines = [",".join([corner, *cols])]
    for t, r in rows.items():
        cells = [repr(r[c]) if c in r and math.isfinite(r[c]) else "" for c in cols]
        lines.append(",".join([t, *cells]))
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    csv_path.write_text("\n".join(lines) + "\n")


def write_outputs(
    result: TransferResult, csv_path: str | Path, json_path: str | Path | None = None
) -> list[Path]:
    """The matrix as a labelled CSV (targets × sources, higher = better) that `evaluate --oracle`
    reads, merged into an existing one (rows/columns of this run replace theirs), and the raw
    scores and settings as JSON (merged likewise)."""
    csv_path = Path(csv_path)
    new: dict[str, dict[str, float]] = {}
    for (t, s), sc in result.scores.items():
        new.setdefault(t, {})[s] = sc.score
    merge_labelled_csv(csv_path, new)
    json_path = Path(json_path) if json_path else csv_path.with_suffix(".json")
    data: dict[str, Any] = {"targets": {}, "scores": {}}
    if json_path.is_file():
        try:
            data = json.loads(json_path.read_text())
        except ValueError:
            pass
    data["settings"] = result.settings
    for t in result.targets:
        data.setdefault("targets", {})[t.name] = t.describe()
    for (t, s), sc in result.scores.items():
        data.setdefault("scores", {}).setdefault(t, {})[s] = {
            k: v for k, v in asdict(sc).items() if k not in ("source", "target")
        }
    _write_json_atomic(json_path, data)
    return [csv_path, json_path]
