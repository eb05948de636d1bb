"""Distance time on a segmented space (format 3) against the same space as one file (format 2).

Builds a space the size of the mini-Taskonomy benchmark's (22 models, saliency/grad_input/elrp,
200 probe images, 64×64 maps, 200×2048 features), copies it into the single-file layout (every
group copied as stored), and times every map estimator (without the pairwise cache) and reading
every model's features (what the feature estimators read; their SVDs do not depend on the
layout) on both, alternating. Reports the ratio, measured side by side in one run.

    python benchmarks/bench_layout.py [--models 22] [--repeats 3] [--out benchmarks/results/layout.md]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from onnxattr.analysis.estimators import compute_affinity  # noqa: E402
from onnxattr.probe import build_probe  # noqa: E402
from onnxattr.space import ModelSpace  # noqa: E402
from onnxattr.space_reader import read_space  # noqa: E402

METHODS = ("saliency", "grad_input", "elrp")


def build(path: Path, models: int) -> None:
    probe = build_probe(None, size=64, seed=0)
    probe = type(probe)(probe.images[:200], probe.names[:200], probe.source, probe.seed,
                        probe.hashes[:200])
    space = ModelSpace(path)
    space.write_probe(probe)
    rng = np.random.default_rng(0)
    base = {m: rng.standard_t(3, size=(200, 64, 64)).astype(np.float32) for m in METHODS}
    for i in range(models):
        maps = {m: b + rng.standard_t(3, size=b.shape).astype(np.float32) for m, b in base.items()}
        space.add_model(f"m{i}", maps, rng.normal(size=(200, 2048)).astype(np.float32), {})


def single_file(src: Path, dst: Path) -> None:
    """The same space in format 2: one HDF5 file holding every group as stored."""
    with h5py.File(src, "r") as f, h5py.File(dst, "w") as out:
        out.attrs.update(format="onnxattr-space", format_version=2)
        f.copy(f["probe"], out, "probe")
        models = out.create_group("models")
        for name in f["models"]:
            f.copy(f["models"][name], models, name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=22)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "layout.md")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        seg, one = Path(tmp) / "segmented.h5", Path(tmp) / "single.h5"
        build(seg, args.models)
        single_file(seg, one)
        rows = []
        for est in (*METHODS, "features"):
            times = {"segmented": [], "single file": []}
            for _ in range(args.repeats):
                for label, path in (("single file", one), ("segmented", seg)):
                    t = time.perf_counter()
                    if est == "features":
                        with read_space(path) as reader:
                            for name in reader.names():
                                reader.features(name)
                    else:
                        compute_affinity(path, est, use_cache=False)
                    times[label].append(time.perf_counter() - t)
            a, b = min(times["single file"]), min(times["segmented"])
            rows.append((est, a, b, b / a))
            print(f"{est}: single file {a:.2f} s, segmented {b:.2f} s, ratio {b / a:.2f}")
    total = sum(r[2] for r in rows) / sum(r[1] for r in rows)
    text = (f"# Distance time by space layout ({args.models} models, 200 images, 64×64 maps; "
            f"best of {args.repeats}; {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f})\n\n"
            "| estimator (or read) | single file (format 2) s | segmented (format 3) s | ratio |\n"
            "|---|---|---|---|\n"
            + "".join(f"| {e} | {a:.2f} | {b:.2f} | {r:.2f} |\n" for e, a, b, r in rows)
            + f"| all | {sum(r[1] for r in rows):.2f} | {sum(r[2] for r in rows):.2f} | {total:.2f} |\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
