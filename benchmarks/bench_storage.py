"""Map storage options side by side: file size, write time, distance time, rankings.

    python benchmarks/bench_storage.py --source demo/space.h5            # real maps
    python benchmarks/bench_storage.py --synthetic --oracle tests/data/first_order_affinity_16k.csv

Every option rewrites the same maps with onnxattr's own writer (`ModelSpace.add_model`, i.e. the
storage step of `add`) into a fresh space, then times the full distance matrix of every method
(no cache, best of ``--repeat``) and compares the rankings with format 1's (float32, no filter):
mean per-target Spearman and top-K overlap. With ``--oracle`` it also scores each option's matrix
against the oracle (P@K, Spearman; onnxattr.evaluation).

``--synthetic`` plants the oracle's structure in smooth random maps: each task gets an embedding
from the oracle's symmetrised rank matrix, each probe image r random smooth patterns, and a
model's map is its embedding's mix of the patterns plus noise, so map cosines follow the oracle.
``--source`` uses real maps of an existing space (its own format-1 copy is the reference); a
reduced ``--map-size`` option resizes those maps (bilinear, antialiased) as `add` would.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401
import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from onnxattr.analysis.distances import LabelledMatrix  # noqa: E402
from onnxattr.analysis.estimators import compute_affinity  # noqa: E402
from onnxattr.analysis.evaluation import Oracle, evaluate, read_oracle  # noqa: E402
from onnxattr.analysis.report import markdown_table  # noqa: E402
from onnxattr.probe import ProbeSet  # noqa: E402
from onnxattr.space import MapStorage, ModelSpace  # noqa: E402


@dataclass(frozen=True)
class RawFeatures(MapStorage):
    """The storage of onnxattr before features were compressed (maps as ``MapStorage``)."""

    def write_features(self, group: h5py.Group, name: str, features: np.ndarray) -> h5py.Dataset:
        return group.create_dataset(name, data=np.asarray(features, dtype=np.float32))


@dataclass(frozen=True)
class Level(MapStorage):
    """Maps through another compressor setting (``codec``: h5py filter keywords)."""

    codec: tuple = ()

    def filter(self, dtype: str | None = None) -> dict:
        return dict(self.codec) if (dtype or self.dtype) == "float16" else super().filter(dtype)


def _blosc2(level: int, shuffle: int) -> tuple:
    return tuple(hdf5plugin.Blosc2(cname="zstd", clevel=level, filters=shuffle).items())


#: (label, storage, map size: None = as the source, "half" = S/2)
OPTIONS = [
    ("format 1: float32, no filter", MapStorage("float32", 10, "none", 23), None),
    ("float32, blosc2-zstd (maps and features)", MapStorage("float32", 10, "blosc2", 23), None),
    ("float16, blosc2-zstd, features raw", RawFeatures("float16", 10, "blosc2", 23), None),
    (
        "float16 3 bits, features raw (default until now)",
        RawFeatures("float16", 3, "blosc2", 23),
        None,
    ),
    ("float16 3 bits + features blosc2", MapStorage("float16", 3, "blosc2", 23), None),
    (
        "  same, maps blosc2 zstd level 5",
        Level("float16", 3, "blosc2", 23, codec=_blosc2(5, hdf5plugin.Blosc2.BITSHUFFLE)),
        None,
    ),
    (
        "  same, maps blosc2 zstd 5 byte-shuffle",
        Level("float16", 3, "blosc2", 23, codec=_blosc2(5, hdf5plugin.Blosc2.SHUFFLE)),
        None,
    ),
    (
        "  same, maps zstd 9 + shuffle",
        Level(
            "float16",
            3,
            "blosc2",
            23,
            codec=tuple({**hdf5plugin.Zstd(clevel=9), "shuffle": True}.items()),
        ),
        None,
    ),
    ("float16 2 bits + features blosc2", MapStorage("float16", 2, "blosc2", 23), None),
    ("float16 1 bit + features blosc2", MapStorage("float16", 1, "blosc2", 23), None),
    ("float16 3 bits + features 10 bits", MapStorage("float16", 3, "blosc2", 10), None),
    ("float16 2 bits + features 10 bits (default)", MapStorage("float16", 2, "blosc2", 10), None),
    ("default, --map-size S/2", MapStorage(), "half"),
]
#: Feature-based estimators, scored too (their input changes only with feature_bits < 23).
FEATURE_ESTIMATORS = ("cka", "rsa", "relation", "svcca")


def read_source(path: Path) -> tuple[ProbeSet, dict[str, dict[str, np.ndarray]], dict]:
    space = ModelSpace(path)
    probe = space.read_probe()
    models = {r.name: {m: space.read_maps(r.name, m) for m in r.methods} for r in space.models()}
    with h5py.File(path) as f:
        feats = {n: f[f"models/{n}/features"][()] for n in models}
    return probe, models, feats


def synthetic(
    oracle_path: Path, n_img: int, size: int, rank: int, noise: float, seed: int
) -> tuple[ProbeSet, dict[str, dict[str, np.ndarray]], dict]:
    oracle = read_oracle(oracle_path)
    names = [t for t in oracle.targets if t in oracle.sources]
    v = oracle.values[
        np.ix_([oracle.targets.index(t) for t in names], [oracle.sources.index(t) for t in names])
    ]
    ranks = np.zeros_like(v)
    for i, row in enumerate(v):  # per-target ranks in [0, 1]: rows differ in scale
        ok = np.isfinite(row)
        ranks[i, ok] = np.argsort(np.argsort(row[ok])) / max(1, ok.sum() - 1)
    sym = (ranks + ranks.T) / 2
    np.fill_diagonal(sym, 1.0)
    w, u = np.linalg.eigh(sym - sym.mean())
    emb = u[:, -rank:] * np.sqrt(np.clip(w[-rank:], 0, None))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    low = torch.from_numpy(rng.normal(size=(n_img * rank, 1, 8, 8)).astype(np.float32))
    patterns = F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    patterns = patterns.numpy().reshape(n_img, rank, size, size)
    models = {}
    for i, name in enumerate(names):
        base = np.einsum("r,krhw->khw", emb[i], patterns)
        maps = {}
        for j, method in enumerate(("saliency", "grad_input")):
            m = base + noise * rng.normal(size=base.shape) * (1 + j)
            maps[method] = (np.abs(m) if method == "saliency" else m).astype(np.float32) * 1e-4
        models[name] = maps
    images = rng.integers(0, 255, (n_img, size, size, 3), np.uint8)
    probe = ProbeSet(
        images=images,
        names=[f"img{k}.png" for k in range(n_img)],
        source="synthetic",
        seed=seed,
        hashes=[f"{k:064x}" for k in range(n_img)],
    )
    feats = {n: rng.normal(size=(n_img, 8)).astype(np.float32) for n in models}
    return probe, models, feats


def restrict(oracle: Oracle, names: list[str]) -> Oracle:
    """The oracle's rows and columns of the models in the space."""
    t = [i for i, n in enumerate(oracle.targets) if n in names]
    s = [j for j, n in enumerate(oracle.sources) if n in names]
    return Oracle(
        [oracle.targets[i] for i in t], [oracle.sources[j] for j in s], oracle.values[np.ix_(t, s)]
    )


def resize(maps: np.ndarray, side: int) -> np.ndarray:
    t = torch.from_numpy(maps)[:, None]
    return F.interpolate(
        t, size=(side, side), mode="bilinear", align_corners=False, antialias=True
    )[:, 0].numpy()


def write(
    path: Path, probe: ProbeSet, models: dict, feats: dict, storage: MapStorage, side: int | None
) -> float:
    space = ModelSpace(path)
    space.write_probe(probe)
    seconds = 0.0
    for name, maps in models.items():
        if side is not None:
            maps = {m: resize(a, side) for m, a in maps.items()}
        t0 = time.perf_counter()
        space.add_model(name, maps, feats[name], {"framework": "bench"}, storage=storage)
        seconds += time.perf_counter() - t0
    return seconds


def agreement(ref, m, k: int) -> tuple[float, float]:
    """Mean per-target Spearman of two affinity matrices' rows and mean top-k overlap."""
    rho, overlap = [], []
    for i in range(len(ref.names)):
        keep = [j for j in range(len(ref.names)) if j != i]
        a, b = ref.values[i, keep], m.values[i, keep]
        rho.append(spearmanr(a, b)[0])
        overlap.append(len(set(np.argsort(-a)[:k]) & set(np.argsort(-b)[:k])) / k)
    return float(np.mean(rho)), float(np.mean(overlap))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, help="an existing space with real maps")
    ap.add_argument("--synthetic", action="store_true", help="plant --oracle's structure instead")
    ap.add_argument("--oracle", type=Path, help="oracle CSV (target rows x source columns)")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--rank", type=int, default=6)
    ap.add_argument("--noise", type=float, default=1.0)
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    if args.synthetic == bool(args.source):
        ap.error("give exactly one of --source and --synthetic")
    if args.synthetic and not args.oracle:
        ap.error("--synthetic needs --oracle")
    if args.source:
        probe, models, feats = read_source(args.source)
    else:
        probe, models, feats = synthetic(
            args.oracle, args.images, args.size, args.rank, args.noise, seed=0
        )
    oracle = restrict(read_oracle(args.oracle), list(models)) if args.oracle else None
    methods = sorted({m for maps in models.values() for m in maps})
    full = next(iter(next(iter(models.values())).values())).shape[-1]
    print(
        f"{len(models)} models, {len(probe)} probe images, maps {full}x{full}, methods "
        f"{', '.join(methods)}; source: {args.source or 'synthetic, oracle ' + str(args.oracle)}",
        flush=True,
    )
    results, ref = [], {}
    workdir = Path(tempfile.mkdtemp(dir=args.dir, prefix="bench_storage_"))
    for k, (label, storage, side_opt) in enumerate(OPTIONS):
        side = full // 2 if side_opt == "half" else None
        path = workdir / f"option{k}.h5"
        write_s = write(path, probe, models, feats, storage, side)
        row = {
            "option": label,
            "mb": path.stat().st_size / 2**20,
            "write_s": write_s,
            "distance_s": 0.0,
            "methods": {},
        }
        for method in [*methods, *FEATURE_ESTIMATORS]:
            times = []
            for _ in range(args.repeat if method in methods else 1):
                t0 = time.perf_counter()
                matrix, _ = compute_affinity(path, method, use_cache=False)
                times.append(time.perf_counter() - t0)
            if method in methods:  # the distance time is that of the map estimators
                row["distance_s"] += min(times)
            ref.setdefault(method, matrix)
            rho, overlap = agreement(ref[method], matrix, args.top)
            stats = {"rho_vs_format1": rho, f"top{args.top}_overlap_vs_format1": overlap}
            if oracle is not None:
                keep = [i for i, n in enumerate(matrix.names) if n in oracle.names]
                sub = LabelledMatrix(
                    [matrix.names[i] for i in keep], matrix.values[np.ix_(keep, keep)], matrix.kind
                )
                ev = evaluate(sub, oracle, top=args.top)
                stats.update(
                    {f"P@{k}": float(ev.precision[k - 1]) for k in (1, 3, 5)},
                    spearman_oracle=float(ev.spearman),
                )
            row["methods"][method] = stats
        results.append(row)
        path.unlink()
        print(json.dumps(row), flush=True)
    shutil.rmtree(workdir)  # also the spaces' lock files
    base = results[0]
    header = [
        "option",
        "file MB",
        "smaller",
        "write s",
        "distance s",
        "× format 1",
        "min ρ vs format 1",
        f"min top-{args.top} overlap",
    ]
    if oracle is not None:
        names = [*methods, *FEATURE_ESTIMATORS]
        header += [f"P@{k} ({'/'.join(names)})" for k in (1, 3, 5)]
        header += ["Spearman vs oracle", "max abs ΔP@K vs format 1"]
    rows = []
    for r in results:
        ms = r["methods"].values()
        cells = [
            r["option"],
            f"{r['mb']:.1f}",
            f"{base['mb'] / r['mb']:.2f}×",
            f"{r['write_s']:.2f}",
            f"{r['distance_s']:.2f}",
            f"{r['distance_s'] / base['distance_s']:.2f}",
            f"{min(s['rho_vs_format1'] for s in ms):.4f}",
            f"{min(s[f'top{args.top}_overlap_vs_format1'] for s in ms):.3f}",
        ]
        if oracle is not None:
            cells += ["/".join(f"{s[f'P@{k}']:.3f}" for s in ms) for k in (1, 3, 5)]
            cells.append("/".join(f"{s['spearman_oracle']:.3f}" for s in ms))
            cells.append(
                f"{max(abs(s[f'P@{k}'] - base['methods'][e][f'P@{k}']) for e, s in r['methods'].items() for k in (1, 3, 5)):.3f}"
            )
        rows.append(cells)
    print(markdown_table(header, rows))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
