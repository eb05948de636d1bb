"""8 models one after another vs on Ray (local workers, or a running cluster), side by side.

    python benchmarks/bench_ray.py --workers 2
    ray start --head --port 6390 --num-cpus 1 && \
      ray start --address 127.0.0.1:6390 --num-cpus 1 --resources '{"second_node": 1}'
    python benchmarks/bench_ray.py --address 127.0.0.1:6390 --skip-sequential

The models are the first ``--models`` committed mini-Taskonomy encoders (onnxattr/benchmark/data),
written to a manifest; each mode adds them all to a fresh space with the same probe set
(``--n`` benchmark scenes) through `onnxattr.cluster.add_many`, and the wall time is compared.
The Ray times include starting Ray (or joining the cluster).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from onnxattr.benchmark.world import committed_dir  # noqa: E402
from onnxattr.cluster import add_many, read_manifest  # noqa: E402
from onnxattr.probe import ProbeSet  # noqa: E402
from onnxattr.space import ModelSpace  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=8)
    ap.add_argument("--n", type=int, default=64, help="probe images")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--address", help="a running Ray cluster to use instead of local workers")
    ap.add_argument("--skip-sequential", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    d = committed_dir()
    models = json.loads((d / "manifest.json").read_text())["models"][: args.models]
    rng = __import__("numpy").random.default_rng(0)
    size = 64
    probe = ProbeSet(rng.integers(0, 255, (args.n, size, size, 3), "uint8"),
                     [f"img{i}" for i in range(args.n)], "bench_ray", 0)
    out = {"models": [m["name"] for m in models], "n": args.n}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = [{"path": str(d / m["file"]), "name": m["name"], "encoder_node": m["encoder_node"],
                 "framework": m["framework"], "task": m["task"],
                 "preprocessing": m["preprocessing"]} for m in models]
        (tmp / "m.json").write_text(json.dumps(rows))
        entries = read_manifest(tmp / "m.json")
        modes = [] if args.skip_sequential else [("sequential", {"workers": 0})]
        modes.append((f"ray {args.address}" if args.address else f"ray {args.workers} workers",
                      {"address": args.address} if args.address else {"workers": args.workers}))
        for label, kw in modes:
            space = tmp / f"{label.replace(' ', '_')}.h5"
            ModelSpace(space).write_probe(probe)
            t0 = time.perf_counter()
            res = add_many(space, entries, log=lambda m: print(f"  {m}", flush=True), **kw)
            out[label] = {"seconds": time.perf_counter() - t0, "added": len(res.added),
                          "failed": res.failed, "workers": res.workers, "nodes": res.nodes}
            print(f"{label}: {out[label]}", flush=True)
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
