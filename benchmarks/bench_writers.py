"""Writers into one space: one process adding 80 models against 4 processes adding 20 each.

Segments are written in parallel; only the index commit is serialised under the space's lock.
Each add stores 3 methods × 200 probe images of 64×64 maps and 200×512 features (the size of a
mini-Taskonomy model), encoded and compressed in the writer. Reports wall times side by side in
one run and their ratio, and checks the space afterwards (every model present, `check` clean).

    python benchmarks/bench_writers.py [--adds 80] [--writers 4] [--out benchmarks/results/writers.md]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from onnxattr.integrity import check_space  # noqa: E402
from onnxattr.probe import build_probe  # noqa: E402
from onnxattr.space import ModelSpace  # noqa: E402

WRITER = """
import sys, numpy as np
from onnxattr.space import ModelSpace
space, prefix, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = np.random.default_rng(abs(hash(prefix)) % 2**32)
s = ModelSpace(space)
for i in range(n):
    maps = {m: rng.standard_t(3, size=(200, 64, 64)).astype(np.float32)
            for m in ("saliency", "grad_input", "elrp")}
    s.add_model(f"{prefix}{i}", maps, rng.normal(size=(200, 512)).astype(np.float32), {})
"""


def run(space: Path, writers: int, adds: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    t = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(space), f"w{w}_", str(adds // writers)],
                              env=env) for w in range(writers)]
    codes = [p.wait() for p in procs]
    wall = time.perf_counter() - t
    if any(codes):
        raise SystemExit(f"a writer failed: exit codes {codes}")
    names = ModelSpace(space).model_names()
    assert len(names) == adds, (len(names), adds)
    assert check_space(space).ok
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adds", type=int, default=80)
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "writers.md")
    args = ap.parse_args()
    probe = build_probe(None, size=64, seed=0)
    probe = type(probe)(probe.images[:200], probe.names[:200], probe.source, probe.seed,
                        probe.hashes[:200])
    with tempfile.TemporaryDirectory() as tmp:
        walls = {}
        for writers in (1, args.writers):
            space = Path(tmp) / f"w{writers}.h5"
            ModelSpace(space).write_probe(probe)
            walls[writers] = run(space, writers, args.adds)
            print(f"{writers} writer(s) x {args.adds // writers} adds: {walls[writers]:.1f} s")
    ratio = walls[args.writers] / walls[1]
    load = os.getloadavg()[0]
    text = (f"# Writers into one space ({os.cpu_count()} cores, load {load:.1f} at the end)\n\n"
            f"| writers | adds each | wall s | × one writer |\n|---|---|---|---|\n"
            f"| 1 | {args.adds} | {walls[1]:.1f} | 1.00 |\n"
            f"| {args.writers} | {args.adds // args.writers} | {walls[args.writers]:.1f} | {ratio:.2f} |\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
