"""Sketch path vs exact map cosine on a real space: rank agreement, speed, bytes read, P@K.

    python benchmarks/bench_sketch.py --source bench_space.h5 \
        --oracle onnxattr/benchmark/data/oracle.csv --dims 128 256 512 1024

``--source`` is an existing space (e.g. the mini-Taskonomy benchmark's, float32 maps); its
maps are rewritten in the default storage with the sketches `add` stores (computed from the
source's maps), and for every method: the exact matrix (``METHOD``) and the sketch matrix at each ``--dims``
(``sketch:METHOD`` with ``sketch_dims``) from an empty cache, best of ``--repeat`` wall times,
bytes read (``rchar``). Agreement with the exact matrix: Spearman over all pairs, mean
per-target Spearman, mean top-``--top`` overlap; with ``--oracle`` also P@1/P@3 and Spearman
against the oracle for each. Two alternatives are scored on the same maps (in memory):

* ``shared``: one projection for every image, as a first design did (Gaussian N(0, 1/k), and
  the orthogonalised version of the same matrix): the images' errors are then correlated;
* ``rerank L``: the sketch only shortlists each target's L best sources, whose exact affinities
  then replace the sketch's (approximate retrieval + exact re-ranking; the fraction of pairs
  computed exactly is shown).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import hdf5plugin  # noqa: F401
import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _proc import rchar  # noqa: E402

from onnxattr.analysis.distances import LabelledMatrix  # noqa: E402
from onnxattr.analysis.estimators import compute_affinity  # noqa: E402
from onnxattr.analysis.evaluation import evaluate, read_oracle, restrict  # noqa: E402
from onnxattr.analysis.report import markdown_table  # noqa: E402
from onnxattr.analysis.sketch import SKETCH_DIM, sketch_maps  # noqa: E402
from onnxattr.space import DEFAULT_STORAGE, ModelSpace  # noqa: E402
from onnxattr.space_reader import read_space  # noqa: E402


def timed(space: Path, name: str, repeat: int, **params) -> tuple[LabelledMatrix, float, int]:
    """Best wall time of ``repeat`` uncached computations, and the bytes the last one read."""
    best = np.inf
    for _ in range(repeat):
        r0, t0 = rchar(), time.perf_counter()
        matrix, _ = compute_affinity(space, name, use_cache=False, **params)
        best, read = min(best, time.perf_counter() - t0), rchar() - r0
    return matrix, best, read


def agreement(exact: np.ndarray, approx: np.ndarray, top: int) -> dict[str, float]:
    n = len(exact)
    iu = np.triu_indices(n, 1)
    rho, overlap = [], []
    for i in range(n):
        o = np.array([j for j in range(n) if j != i])
        rho.append(spearmanr(exact[i, o], approx[i, o])[0])
        best_e, best_a = o[np.argsort(-exact[i, o])[:top]], o[np.argsort(-approx[i, o])[:top]]
        overlap.append(len(set(best_e) & set(best_a)) / top)
    return {
        "spearman_all_pairs": float(spearmanr(exact[iu], approx[iu])[0]),
        "spearman_per_target": float(np.mean(rho)),
        f"top{top}_overlap": float(np.mean(overlap)),
    }


def rerank(exact: np.ndarray, approx: np.ndarray, shortlist: int) -> tuple[np.ndarray, float]:
    """Exact values for each target's ``shortlist`` best sources by the sketch; the fraction of
    off-diagonal pairs that needed an exact computation."""
    n = len(exact)
    chosen = np.zeros((n, n), bool)
    for i in range(n):
        o = np.array([j for j in range(n) if j != i])
        chosen[i, o[np.argsort(-approx[i, o])[:shortlist]]] = True
    chosen |= chosen.T
    out = np.where(chosen, exact, approx)
    return out, float(chosen[np.triu_indices(n, 1)].mean())


def shared_projection_affinities(
    space: Path, method: str, dims: list[int], seed: int = 0
) -> dict[str, np.ndarray]:
    """The first design's affinities: one k x S² projection for every image."""
    with read_space(space) as reader:
        names = reader.names()
        unit = []
        for n in names:
            x = reader.stored_maps(n, method, slice(None)).astype(np.float32)
            x = x.reshape(len(x), -1)
            unit.append(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30))
    unit = np.stack(unit)
    rng = np.random.default_rng(seed)
    out = {}
    for k in dims:
        g = rng.standard_normal((unit.shape[2], k)).astype(np.float32) / np.float32(np.sqrt(k))
        q, _ = np.linalg.qr(g)
        for label, proj in (("gaussian", g), ("orthogonal", q)):
            s = unit @ proj
            s /= np.maximum(np.linalg.norm(s, axis=2, keepdims=True), 1e-30)
            s = s.reshape(len(names), -1) / np.sqrt(unit.shape[1])
            out[f"shared {label}, k={k}"] = s @ s.T
    return out


def oracle_scores(matrix: LabelledMatrix, values: np.ndarray, oracle, top: int) -> dict[str, float]:
    keep = [i for i, n in enumerate(matrix.names) if n in oracle.sources or n in oracle.targets]
    sub = LabelledMatrix([matrix.names[i] for i in keep], values[np.ix_(keep, keep)])
    ev = evaluate(sub, restrict(oracle, sub.names), top=top)
    return {
        "P@1": float(ev.precision[0]),
        "P@3": float(ev.precision[2]),
        "spearman_oracle": float(ev.spearman),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, required=True)
    ap.add_argument("--oracle", type=Path)
    ap.add_argument("--methods", nargs="*", help="default: every stored method")
    ap.add_argument("--dims", type=int, nargs="+", default=[128, 256, 512, SKETCH_DIM])
    ap.add_argument("--shortlist", type=int, nargs="*", default=[3, 5])
    ap.add_argument("--top", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_sketch_"))
    space = work / "space.h5"
    src, dst = ModelSpace(args.source), ModelSpace(space)
    dst.write_probe(src.read_probe())
    sketch_s = 0.0
    for r in src.models():
        encoded, sketches = {}, {}
        for m in r.methods:
            maps = src.read_maps(r.name, m)
            encoded[m] = DEFAULT_STORAGE.encode(maps)
            t0 = time.perf_counter()
            sketches[m] = sketch_maps(maps)
            sketch_s += time.perf_counter() - t0
        dst.add_encoded(r.name, encoded, src.read_features(r.name), {}, sketches=sketches)
    records = dst.models()
    methods = args.methods or sorted({m for r in records for m in r.methods})
    oracle = read_oracle(args.oracle) if args.oracle else None
    with read_space(space) as reader:
        d = reader.map_shape(records[0].name, methods[0])
    print(
        f"{len(records)} models, {d[0]} images, maps {d[1]}x{d[2]}; stored as `add` does; "
        f"sketching every map took {sketch_s:.1f} s",
        flush=True,
    )
    rows = []
    for method in methods:
        exact, ex_s, ex_read = timed(space, method, args.repeat)
        row = {"method": method, "path": "exact", "seconds": ex_s, "mb_read": ex_read / 2**20}
        if oracle:
            row.update(oracle_scores(exact, exact.values, oracle, args.top))
        rows.append(row)
        print(json.dumps(row), flush=True)
        for k in args.dims:
            approx, s, read = timed(space, f"sketch:{method}", args.repeat, sketch_dims=k)
            row = {
                "method": method,
                "path": f"sketch, k={k}",
                "seconds": s,
                "mb_read": read / 2**20,
                "speedup": ex_s / s,
                "read_less": ex_read / read,
                **agreement(exact.values, approx.values, args.top),
            }
            if oracle:
                row.update(oracle_scores(approx, approx.values, oracle, args.top))
            rows.append(row)
            print(json.dumps(row), flush=True)
            for shortlist in args.shortlist:
                values, frac = rerank(exact.values, approx.values, shortlist)
                row = {
                    "method": method,
                    "path": f"sketch k={k} + exact rerank of top {shortlist}",
                    "exact_pairs": frac,
                    **agreement(exact.values, values, args.top),
                }
                if oracle:
                    row.update(oracle_scores(approx, values, oracle, args.top))
                rows.append(row)
        for label, values in shared_projection_affinities(space, method, args.dims).items():
            rows.append(
                {"method": method, "path": label, **agreement(exact.values, values, args.top)}
            )
    shutil.rmtree(work)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    cols = [
        "method",
        "path",
        "spearman_all_pairs",
        "spearman_per_target",
        f"top{args.top}_overlap",
        "seconds",
        "speedup",
        "mb_read",
        "read_less",
        "exact_pairs",
    ]
    if oracle:
        cols += ["P@1", "P@3", "spearman_oracle"]

    def cell(v):
        return (
            "" if v is None else v if isinstance(v, str) else f"{v:.3g}" if v > 10 else f"{v:.3f}"
        )

    print(markdown_table(cols, [[cell(r.get(c)) for c in cols] for r in rows]))


if __name__ == "__main__":
    main()
