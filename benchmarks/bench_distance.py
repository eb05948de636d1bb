"""Time and peak memory of `distance` on a large synthetic space, and of adding one model.

    python benchmarks/bench_distance.py --models 200 --images 1000 --size 112 --dir /tmp

Builds a synthetic space (one attribution method, float32 maps, random values: the worst case for
compression) as segments written with plain h5py (tests/space_factory.py), then in fresh child processes (so peak RSS is the computation's
own): (1) the full matrix from an empty cache, (2) one more model added (incremental: N pairs),
(3) the import-only baseline. The space is deleted afterwards unless --keep.
``--layout space`` stores maps like onnxattr.space (one gzip chunk per image); ``plain`` stores
them contiguous (pure compute + I/O cost). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from onnxattr.segments import segment_dir  # noqa: E402
from onnxattr.space import ModelSpace  # noqa: E402
from tests.space_factory import add_model, create_space  # noqa: E402


def build(path: Path, n_models: int, n_img: int, size: int, layout: str, method: str) -> float:
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    create_space(path, n_img, size, digest="bench")
    base = rng.random((n_img, size, size), dtype=np.float32)
    for i in range(n_models):
        add(path, f"model{i:03d}", base, rng, layout, method)
        if (i + 1) % 20 == 0:
            print(f"  built {i + 1}/{n_models} models ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
    return time.perf_counter() - t0


def add(path: Path, name: str, base: np.ndarray, rng: np.random.Generator, layout: str,
        method: str) -> None:
    """One model: the shared base pattern plus its own noise, so affinities vary."""
    maps = base + rng.random(base.shape, dtype=np.float32) * np.float32(rng.uniform(0.2, 2))
    add_model(path, name, {method: maps}, compress=layout == "space")


def reset(path: Path) -> None:
    """Back to the built state: no pairwise cache, no added model."""
    space = ModelSpace(path)
    with h5py.File(path, "r") as f:
        keys = list(f.get("analysis/estimators", {}))
    for key in keys:
        space.commit_segment("cache", key, None)
    if space.has_model("added"):
        space.remove_model("added")


def size_gib(path: Path) -> float:
    folder = segment_dir(path)
    return (path.stat().st_size + sum(p.stat().st_size for p in folder.iterdir())) / 2**30


def child(path: str, method: str, memory_mb: int, mode: str) -> None:
    """Runs in a fresh process; prints one JSON line."""
    t0 = time.perf_counter()
    from onnxattr.analysis.estimators import compute_affinity

    t_import = time.perf_counter() - t0
    out = {"mode": mode, "import_s": t_import}
    if mode != "import":
        t1 = time.perf_counter()
        m, stats = compute_affinity(path, method, memory_bytes=memory_mb << 20)
        out.update(seconds=time.perf_counter() - t1, models=len(m.names), **stats)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out["cpu_s"] = ru.ru_utime + ru.ru_stime
    out["peak_rss_mb"] = ru.ru_maxrss / 1024
    print(json.dumps(out))


def run_child(path: Path, method: str, memory_mb: int, mode: str) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--space", str(path), "--method", method,
           "--memory-mb", str(memory_mb)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=200)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--method", default="saliency")
    ap.add_argument("--memory-mb", type=int, default=1024)
    ap.add_argument("--layout", choices=("space", "plain"), default="space")
    ap.add_argument("--dir", type=Path, default=Path("/tmp"))
    ap.add_argument("--keep", action="store_true", help="keep the space afterwards")
    ap.add_argument("--reuse", type=Path, help="space file of an earlier --keep run to reuse")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--space", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.space, args.method, args.memory_mb, args.child)
        return

    need = (args.models + 1) * args.images * args.size**2 * 4
    free = shutil.disk_usage(args.dir).free
    if not args.reuse and need * 1.1 > free:
        sys.exit(f"need ~{need / 2**30:.1f} GiB in {args.dir}, only {free / 2**30:.1f} GiB free")
    path = args.reuse or args.dir / f"bench_space_{uuid.uuid4().hex[:8]}.h5"
    try:
        if args.reuse:
            reset(path)
            build_s = float("nan")
        else:
            print(f"building {path}: {args.models} models x {args.images} images x "
                  f"{args.size}^2 ({need / 2**30:.1f} GiB of float32 maps, layout {args.layout})",
                  flush=True)
            build_s = build(path, args.models, args.images, args.size, args.layout, args.method)
        full = run_child(path, args.method, args.memory_mb, "full")
        rng = np.random.default_rng(1)
        base = rng.random((args.images, args.size, args.size), dtype=np.float32)
        add(path, "added", base, rng, args.layout, args.method)
        inc = run_child(path, args.method, args.memory_mb, "incremental")
        cached = run_child(path, args.method, args.memory_mb, "cached")
        imp = run_child(path, args.method, args.memory_mb, "import")
        file_gib = size_gib(path)
    finally:
        if not args.keep:
            shutil.rmtree(segment_dir(path), ignore_errors=True)
            path.unlink(missing_ok=True)
    result = {"models": args.models, "images": args.images, "size": args.size,
              "layout": args.layout, "memory_budget_mb": args.memory_mb, "file_gib": file_gib,
              "build_s": build_s, "full": full, "add_one": inc, "all_cached": cached,
              "import_only": imp}
    print(json.dumps(result, indent=1))
    for label, r in ((f"full {full['models']}x{full['models']}", full), ("add one model", inc)):
        print(f"{label}: {r['seconds']:.1f} s wall, {r['cpu_s']:.1f} s CPU, peak RSS "
              f"{r['peak_rss_mb']:.0f} MB ({r['computed_pairs']} pairs)")
    print(f"all cached: {cached['seconds']:.2f} s; import-only RSS {imp['peak_rss_mb']:.0f} MB")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
