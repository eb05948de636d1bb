"""How distance, rank and incremental adds grow with the number of models; exact vs sketches.

    python benchmarks/bench_growth.py --models 200 1000 5000 --images 8 --size 64 --sketch-dims 256

Synthetic spaces with planted structure (``--clusters`` base patterns per probe image; model i =
its cluster's pattern + noise of a model-specific level), one segment per model written with
plain h5py (float16 maps scaled per image, Blosc2, plus per-image sketches of ``--sketch-dims``
dimensions as `add` / `onnxattr sketch` store them). For each
size and path (exact ``elrp`` / approximate ``sketch:elrp``), in a fresh child process: the full
matrix from an empty cache, then one more model added and the incremental update (N pairs), then
`rank` of one model from the cache. Reported: wall time, peak RSS, bytes read (``rchar``), and
the sketch path's agreement with the exact one (Spearman over all pairs, per-target top-5).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _proc import rchar  # noqa: E402

from onnxattr.segments import segment_dir  # noqa: E402


def model_fill(maps: np.ndarray, dims: int):
    """A segment filler writing one model as `add` stores it (float16, Blosc2, sketches)."""
    from onnxattr.analysis.sketch import sketch_maps
    from onnxattr.space import DEFAULT_STORAGE, write_sketch

    def fill(f: h5py.File, group: str) -> None:
        data, scale = DEFAULT_STORAGE.encode(maps)
        g = f.create_group(group)
        g.attrs["uid"] = uuid.uuid4().hex
        g.create_group("maps").create_dataset(
            "elrp", data=data, chunks=(1, *data.shape[1:]), **DEFAULT_STORAGE.filter()
        )
        g.create_group("map_scale").create_dataset("elrp", data=scale)
        write_sketch(g, "elrp", sketch_maps(maps, 0, dims))

    return fill


def build(
    path: Path, n_models: int, n_img: int, size: int, clusters: int, dims: int, seed: int
) -> None:
    """Every model a segment, committed in one index replace (as `migrate` does)."""
    from onnxattr import segments
    from onnxattr.space import FORMAT, FORMAT_VERSION

    rng = np.random.default_rng(seed)
    bases = rng.normal(size=(clusters, n_img, size, size)).astype(np.float32)

    def probe(f: h5py.File, group: str) -> None:
        p = f.create_group(group)
        p.create_dataset("images", data=np.zeros((n_img, size, size, 3), np.uint8))
        p.attrs.update(size=size, seed=0, source="synthetic", digest="growth")

    changes = [segments.Change("probe", "", segments.write_segment(path, "probe", "", probe))]
    for i in range(n_models):
        noise = rng.uniform(0.3, 3.0)
        maps = bases[i % clusters] + noise * rng.normal(size=bases.shape[1:]).astype(np.float32)
        name = f"m{i:05d}"
        changes.append(segments.Change(
            "model", name, segments.write_segment(path, "model", name, model_fill(maps, dims))))
    segments.commit_changes(path, segments.empty_manifest(path), changes, {
        "format": FORMAT, "format_version": FORMAT_VERSION, "layout": segments.LAYOUT})


def child(space: str, est: str, mode: str, size: int, n_img: int, dims: int) -> None:
    from onnxattr.analysis.distances import ranking
    from onnxattr.analysis.estimators import compute_affinity

    out = {"mode": mode}
    r0, t0 = rchar(), time.perf_counter()
    if mode == "add_one":
        from onnxattr.space import ModelSpace

        rng = np.random.default_rng(99)
        maps = rng.normal(size=(n_img, size, size)).astype(np.float32)
        ModelSpace(space).commit_segment("model", f"new{uuid.uuid4().hex[:6]}",
                                         model_fill(maps, dims))
    m, stats = compute_affinity(space, est)
    if mode == "rank":
        ranking(m, m.names[0])
    if mode == "full":
        np.save(space + f".{est.replace(':', '_')}.npy", m.values)
    out.update(
        seconds=time.perf_counter() - t0,
        bytes_read=rchar() - r0,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **stats,
    )
    print(json.dumps(out))


def run_child(space: Path, est: str, mode: str, size: int, n_img: int, dims: int) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        str(space),
        est,
        mode,
        str(size),
        str(n_img),
        str(dims),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, nargs="+", default=[200, 1000, 5000])
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--sketch-dims", type=int, default=256)
    ap.add_argument("--clusters", type=int, default=20)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        space, est, mode, size, n_img, dims = args.child
        child(space, est, mode, int(size), int(n_img), int(dims))
        return
    from scipy.stats import spearmanr

    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="growth_"))
    try:
        for n in args.models:
            t0 = time.perf_counter()
            (tmp / f"b{n}").mkdir()
            base = tmp / f"b{n}" / f"s{n}.h5"
            build(base, n, args.images, args.size, args.clusters, args.sketch_dims, seed=n)
            build_s = time.perf_counter() - t0
            stored = base.stat().st_size + sum(p.stat().st_size for p in segment_dir(base).iterdir())
            res = {"models": n, "build_s": build_s, "file_mb": stored / 2**20}
            for est in ("elrp", "sketch:elrp"):
                # a space is its index and its folder, named after it: copy both, names kept
                space = tmp / f"s{n}_{est.replace(':', '_')}" / base.name
                shutil.copytree(base.parent, space.parent)
                res[est] = {
                    mode: run_child(space, est, mode, args.size, args.images, args.sketch_dims)
                    for mode in ("full", "rank", "add_one")
                }
            exact = np.load(tmp / f"s{n}_elrp" / f"s{n}.h5.elrp.npy")
            approx = np.load(tmp / f"s{n}_sketch_elrp" / f"s{n}.h5.sketch_elrp.npy")
            iu = np.triu_indices(n, 1)
            top = [
                len(
                    set(np.argsort(-np.delete(exact[i], i))[:5])
                    & set(np.argsort(-np.delete(approx[i], i))[:5])
                )
                / 5
                for i in range(n)
            ]
            res["spearman_all_pairs"] = float(spearmanr(exact[iu], approx[iu])[0])
            res["rank_spearman_per_target"] = float(
                np.mean(
                    [
                        spearmanr(np.delete(exact[i], i), np.delete(approx[i], i))[0]
                        for i in range(n)
                    ]
                )
            )
            res["top5_overlap"] = float(np.mean(top))
            rows.append(res)
            print(json.dumps(res), flush=True)
            for p in [*tmp.glob(f"s{n}_*"), tmp / f"b{n}"]:
                shutil.rmtree(p)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        "| models | path | full s | full MB read | peak RSS MB | +1 model s | +1 MB read | rank s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        for est in ("elrp", "sketch:elrp"):
            f, a, k = r[est]["full"], r[est]["add_one"], r[est]["rank"]
            print(
                f"| {r['models']} | {est} | {f['seconds']:.2f} | {f['bytes_read'] / 2**20:.1f} | "
                f"{f['peak_rss_mb']:.0f} | {a['seconds']:.2f} | {a['bytes_read'] / 2**20:.1f} | "
                f"{k['seconds']:.2f} |"
            )
        print(
            f"|  | agreement | Spearman all pairs {r['spearman_all_pairs']:.4f}, per target "
            f"{r['rank_spearman_per_target']:.4f}, top-5 overlap {r['top5_overlap']:.3f} | | | | | |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
