"""The default `onnxattr demo`'s attribution time: before issue 19, with the fast path, and with
shared forward passes, side by side in one run.

    python benchmarks/bench_demo_attribution.py [--repeats 2] [--threads 2]

The demo adds its 6 models (`model_zoo.demo.DEMO_MODELS`, from the zoo cache) on 32 embedded probe
images (224 px) with every method (`list_methods()`). Per model, the attribution part of `add`,
replayed without the space: the pipeline's batches (a first batch of 2 on the exact path, then
batches of 16) through `attribution.attribute`, in four configurations:

- start: `onnxattr/attribution` as it was at ``--start`` (default 8bdef33, before issue 19's
  work), loaded from git beside the current package, on the exact path;
- before: today's code on the exact path (the converted net as is), a forward per mode
  (`share_forward=False`);
- fast: the fast path where `fast.choose_path`'s check keeps it (its extra run of the first batch
  counted), a forward per mode;
- fast+shared: the same with the gradient modes and elrp on one forward (what `add` runs now).

Rounds interleave the four per model, best of ``--repeats``: CPU seconds of one thread
(`time.process_time`, the figures to compare on a shared machine) and wall seconds with
``--threads``. The maps of fast+shared are checked equal (torch.equal) to fast's and their cosine
with start's reported. JSON to ``--json``, markdown to ``--table``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from onnxattr.attribution import attribute, get_method, list_methods  # noqa: E402
from onnxattr.attribution.fast import MIN_COSINE, optimize, per_image_cosine  # noqa: E402
from onnxattr.onnxgraph.convert import TorchNet, to_torch  # noqa: E402
from onnxattr.pipeline import PROBE_BATCH  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CONFIGS = ("start", "before", "fast", "fast+shared")

Maps = dict[str, torch.Tensor]


def attribution_at(commit: str) -> ModuleType:
    """`onnxattr/attribution` as it was at `commit`, imported as `onnxattr._attribution_<commit>`
    (its own method registry; the rest of onnxattr is today's)."""
    import onnxattr

    def git(*a: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True, text=True,
                              check=True).stdout

    folder = Path(tempfile.mkdtemp()) / f"_attribution_{commit}"
    folder.mkdir()
    for f in git("ls-tree", "--name-only", commit, "onnxattr/attribution/").split():
        (folder / Path(f).name).write_text(git("show", f"{commit}:{f}"))
    onnxattr.__path__.append(str(folder.parent))
    return importlib.import_module(f"onnxattr._attribution_{commit}")


def replay(net: TorchNet, x: torch.Tensor, methods: list, config: str, batch: int,
           start: ModuleType) -> tuple[Maps, str]:
    """The maps of every probe image as `add` computes them in `config` (see the docstring), and
    the path the batches after the first ran on (`fast.choose_path`'s check, inline so that its
    run of the first batch follows `config`'s sharing)."""
    share = config == "fast+shared"
    if config == "start":
        old = [start.get_method(m.name) for m in methods]

        def attr(n: TorchNet, xb: torch.Tensor) -> Maps:
            return start.attribute(n, xb, old)
    else:
        def attr(n: TorchNet, xb: torch.Tensor) -> Maps:
            return attribute(n, xb, methods, share_forward=share)
    first = attr(net, x[:PROBE_BATCH])
    run, path = net, "exact"
    if config in ("fast", "fast+shared"):
        fast, _ = optimize(net)
        check = attr(fast, x[:PROBE_BATCH])
        if all(per_image_cosine(first[m], check[m]).min() >= MIN_COSINE for m in first):
            run, path = fast, "fast"
    parts = [first] + [attr(run, x[i:i + batch]) for i in range(PROBE_BATCH, len(x), batch)]
    return {m: torch.cat([p[m] for p in parts]) for m in first}, path


def run_model(name: str, args: argparse.Namespace, start: ModuleType) -> dict:
    import model_zoo
    from onnxattr.encoder import load_encoder
    from onnxattr.probe import embedded_probe

    built = model_zoo.build_one(name)
    enc = load_encoder(built.path, built.entry.encoder_node, built.entry.preprocessing)
    x = enc.preprocessing.apply(embedded_probe(size=224, n=args.n, seed=0).images)
    net = to_torch(enc.model)
    methods = [get_method(m) for m in list_methods()]
    fns = {c: (lambda c=c: replay(net, x, methods, c, args.batch, start)) for c in CONFIGS}
    torch.set_num_threads(1)
    runs = {c: fn() for c, fn in fns.items()}  # warm-up, and the maps to compare
    maps = {c: m for c, (m, _) in runs.items()}
    equal = all(torch.equal(maps["fast"][m], maps["fast+shared"][m]) for m in maps["fast"])
    cosine = {m: float(per_image_cosine(maps["start"][m], maps["fast+shared"][m]).min())
              for m in maps["start"]}
    cpu = {c: float("inf") for c in CONFIGS}
    wall = {c: float("inf") for c in CONFIGS}
    for threads, clock, best in ((1, time.process_time, cpu), (args.threads, time.perf_counter, wall)):
        torch.set_num_threads(threads)
        for _ in range(args.repeats):
            for c, fn in fns.items():
                t0 = clock()
                fn()
                best[c] = min(best[c], clock() - t0)
    return {"model": name, "input_shape": list(x.shape), "methods": list(maps["before"]),
            "path": runs["fast+shared"][1], "cpu_s": cpu, "wall_s": wall, "shared_equal_unshared": equal,
            "min_cosine_vs_start": cosine, "loadavg": os.getloadavg()}


def table(results: list[dict], args: argparse.Namespace) -> str:
    tot = {k: {c: sum(r[k][c] for r in results) for c in CONFIGS} for k in ("cpu_s", "wall_s")}
    loads = [r["loadavg"][0] for r in results]
    lines = [
        "## The default demo's attribution time: start, exact, fast path, fast path + shared forward",
        "",
        f"Generated by `benchmarks/bench_demo_attribution.py` (see its docstring): the "
        f"{len(results)} demo models on {results[0]['input_shape'][0]} probe images with "
        f"{', '.join(results[0]['methods'])}, the attribution part of `add` replayed in its "
        f"batches. start: the attribution code of {args.start} (before issue 19) on the exact "
        "path; exact: today's code on the exact path, a forward per mode; fast: the fast path, a "
        "forward per mode; fast+shared: what `add` runs now. CPU s: one thread, best of "
        f"{args.repeats}, the four interleaved; wall s: {args.threads} threads on a shared machine "
        f"(1-min load average {min(loads):.1f}-{max(loads):.1f} during the run), noisier. Equal: "
        "fast+shared's maps torch.equal to fast's. cos: min per-image cosine of fast+shared's "
        "maps with start's, over the methods.", "",
        "| model | path | start CPU s | exact CPU s | fast CPU s | fast+shared CPU s | "
        "fast+shared / start | start wall s | fast+shared wall s | equal | cos |",
        "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        c, w = r["cpu_s"], r["wall_s"]
        lines.append(f"| {r['model']} | {r['path']} | {c['start']:.2f} | {c['before']:.2f} | "
                     f"{c['fast']:.2f} | {c['fast+shared']:.2f} | "
                     f"{c['fast+shared'] / c['start']:.2f} | {w['start']:.2f} | "
                     f"{w['fast+shared']:.2f} | {'yes' if r['shared_equal_unshared'] else 'NO'} | "
                     f"{min(r['min_cosine_vs_start'].values()):.6f} |")
    c, w = tot["cpu_s"], tot["wall_s"]
    lines += [f"| **all** | | {c['start']:.2f} | {c['before']:.2f} | {c['fast']:.2f} | "
              f"{c['fast+shared']:.2f} | {c['fast+shared'] / c['start']:.2f} | {w['start']:.2f} | "
              f"{w['fast+shared']:.2f} | | |", ""]
    return "\n".join(lines)


def main() -> None:
    from model_zoo.demo import DEMO_MODELS, QUICK_N

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", default=list(DEMO_MODELS))
    ap.add_argument("--n", type=int, default=QUICK_N, help="probe images")
    ap.add_argument("--batch", type=int, default=16, help="batch size after the first batch")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="threads of the wall-clock rounds")
    ap.add_argument("--start", default="8bdef33", help="commit of the 'start' configuration")
    ap.add_argument("--json", type=Path, default=RESULTS / "demo_attribution.json")
    ap.add_argument("--table", type=Path, help="write the markdown section here")
    args = ap.parse_args()
    start = attribution_at(args.start)
    results = []
    for name in args.models:
        results.append(run_model(name, args, start))
        print(json.dumps({k: results[-1][k] for k in ("model", "cpu_s", "wall_s")}), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"args": {k: v for k, v in vars(args).items()
                                              if k not in ("json", "table")},
                                     "results": results}, indent=1))
    text = table(results, args)
    if args.table:
        args.table.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
