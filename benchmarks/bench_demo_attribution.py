"""The default `onnxattr demo`'s attribution time: before issue 19, at each step of it, and now,
side by side in one run.

    python benchmarks/bench_demo_attribution.py [--repeats 2] [--threads 2]

The demo adds its 6 models (`model_zoo.demo.DEMO_MODELS`, from the zoo cache) on 32 embedded probe
images (224 px) with every method (`list_methods()`). Per model, the attribution part of `add`,
replayed without the space: the pipeline's batches (a first batch of 2 on the exact path, then
batches of 16) through `attribution.attribute`, in five configurations:

- start: `onnxattr/attribution` as it was at ``--start`` (default 8bdef33, before issue 19's
  work), loaded from git beside the current package, on the exact path;
- exact: today's code on the exact path (the converted net as is), a forward per mode
  (`share_forward=False`);
- fast: the fast path where the check of its maps keeps it (its extra run of the first batch
  counted), a forward per mode;
- prev: the attribution code at ``--prev`` (default 2309bd0: the fast path, saliency, grad_input
  and elrp on one forward, lrp on its own), as `add` ran it then;
- now: what `add` runs now: `fast.choose_path`'s check, then `fast.keep_faster` (a timed batch of 2
  on each path, kept, each path's time the smaller of it and its first batch's) and the faster path
  on the rest; every mode whose rules allow it (lrp's ε preset included) on one forward.

Rounds interleave the five per model, best of ``--repeats``: CPU seconds of one thread
(`time.process_time`, the figures to compare on a shared machine) and wall seconds with
``--threads``. now's maps are checked against a forward per mode on the same nets (torch.equal,
else the min per-image cosine) and their cosine with start's reported. JSON to ``--json``,
markdown to ``--table``.
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
from onnxattr.attribution.fast import (  # noqa: E402
    MIN_COSINE,
    choose_path,
    keep_faster,
    optimize,
    per_image_cosine,
)
from onnxattr.onnxgraph.convert import TorchNet, to_torch  # noqa: E402
from onnxattr.pipeline import PROBE_BATCH  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CONFIGS = ("start", "exact", "fast", "prev", "now")

Maps = dict[str, torch.Tensor]
#: (net, first image, end) of every batch a replay attributed
Batches = list[tuple[TorchNet, int, int]]


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
           old: dict[str, ModuleType]) -> tuple[Maps, str, Batches]:
    """The maps of every probe image as `add` computes them in `config` (see the docstring), the
    path the last batches ran on, and the batches."""
    if config in old:
        mod = old[config]
        old_methods = [mod.get_method(m.name) for m in methods]

        def attr(n: TorchNet, xb: torch.Tensor) -> Maps:
            return mod.attribute(n, xb, old_methods)
    else:
        def attr(n: TorchNet, xb: torch.Tensor) -> Maps:
            return attribute(n, xb, methods, share_forward=config == "now")
    batches: Batches = []
    parts: list[Maps] = []

    def run(n: TorchNet, start: int, stop: int) -> None:
        batches.append((n, start, stop))
        parts.append(attr(n, x[start:stop]))

    exact_first = time.process_time()
    run(net, 0, PROBE_BATCH)
    exact_first = time.process_time() - exact_first
    done, on, path = PROBE_BATCH, net, "exact"
    if config == "now":
        chosen = choose_path(net, x[:PROBE_BATCH], methods, parts[0], clock=time.process_time)
        if chosen.path == "fast" and len(x) - done >= 2 * PROBE_BATCH:
            def timed_run(n: TorchNet) -> float:
                nonlocal done
                t0 = time.process_time()
                run(n, done, done + PROBE_BATCH)
                done += PROBE_BATCH
                return time.process_time() - t0

            chosen = keep_faster(chosen, net, timed_run, PROBE_BATCH, exact_first=exact_first)
        on, path = chosen.net, chosen.path
    elif config in ("fast", "prev"):
        fast_mod = importlib.import_module(f"{old[config].__name__}.fast") if config in old else None
        fast, _ = (fast_mod.optimize if fast_mod else optimize)(net)
        check = attr(fast, x[:PROBE_BATCH])
        if all(per_image_cosine(parts[0][m], check[m]).min() >= MIN_COSINE for m in check):
            on, path = fast, "fast"
    for i in range(done, len(x), batch):
        run(on, i, min(i + batch, len(x)))
    return {m: torch.cat([p[m] for p in parts]) for m in parts[0]}, path, batches


def unshared_cosine(x: torch.Tensor, methods: list, maps: Maps, batches: Batches) -> float:
    """now's maps against a forward per mode on the same nets: 1.0 when torch.equal, else the min
    per-image cosine (lrp on an unfolded net: alone it merges Conv+BN, shared it does not)."""
    ref = [attribute(n, x[a:b], methods, share_forward=False) for n, a, b in batches]
    ref_maps = {m: torch.cat([r[m] for r in ref]) for m in maps}
    if all(torch.equal(maps[m], ref_maps[m]) for m in maps):
        return 1.0
    return min(float(per_image_cosine(maps[m], ref_maps[m]).min()) for m in maps)


def run_model(name: str, args: argparse.Namespace, old: dict[str, ModuleType]) -> dict:
    import model_zoo
    from onnxattr.encoder import load_encoder
    from onnxattr.probe import embedded_probe

    built = model_zoo.build_one(name)
    enc = load_encoder(built.path, built.entry.encoder_node, built.entry.preprocessing)
    x = enc.preprocessing.apply(embedded_probe(size=224, n=args.n, seed=0).images)
    net = to_torch(enc.model)
    methods = [get_method(m) for m in list_methods()]
    fns = {c: (lambda c=c: replay(net, x, methods, c, args.batch, old)) for c in CONFIGS}
    torch.set_num_threads(1)
    runs = {c: fn() for c, fn in fns.items()}  # warm-up, and the maps to compare
    maps = {c: m for c, (m, _, _) in runs.items()}
    shared_cos = unshared_cosine(x, methods, maps["now"], runs["now"][2])
    cosine = {m: float(per_image_cosine(maps["start"][m], maps["now"][m]).min())
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
    return {"model": name, "input_shape": list(x.shape), "methods": list(maps["exact"]),
            "path": runs["now"][1], "cpu_s": cpu, "wall_s": wall,
            "now_vs_unshared_cosine": shared_cos, "min_cosine_vs_start": cosine,
            "loadavg": os.getloadavg()}


def table(results: list[dict], args: argparse.Namespace) -> str:
    tot = {k: {c: sum(r[k][c] for r in results) for c in CONFIGS} for k in ("cpu_s", "wall_s")}
    loads = [r["loadavg"][0] for r in results]
    lines = [
        "## The default demo's attribution time: start, exact, fast path, previous, now",
        "",
        f"Generated by `benchmarks/bench_demo_attribution.py` (see its docstring): the "
        f"{len(results)} demo models on {results[0]['input_shape'][0]} probe images with "
        f"{', '.join(results[0]['methods'])}, the attribution part of `add` replayed in its "
        f"batches. start: the attribution code of {args.start} (before issue 19) on the exact "
        "path; exact: today's code on the exact path, a forward per mode; fast: the fast path, a "
        f"forward per mode; prev: the code of {args.prev} (fast path; saliency, grad_input, elrp "
        "on one forward, lrp on its own); now: what `add` runs now (the path kept by its maps and "
        "by a timed batch on each path; lrp ε on the shared forward too). CPU s: one thread, best "
        f"of {args.repeats}, the five interleaved; wall s: {args.threads} threads on a shared "
        f"machine (1-min load average {min(loads):.1f}-{max(loads):.1f} during the run), noisier. "
        "path: the path now ran the last batches on. vs per mode: now's maps against a forward "
        "per mode on the same nets (equal: torch.equal; else the min per-image cosine). cos: min "
        "per-image cosine of now's maps with start's, over the methods.", "",
        "| model | path | start CPU s | exact CPU s | fast CPU s | prev CPU s | now CPU s | "
        "now / prev | now / start | start wall s | now wall s | vs per mode | cos |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        c, w = r["cpu_s"], r["wall_s"]
        same = r["now_vs_unshared_cosine"]
        lines.append(f"| {r['model']} | {r['path']} | {c['start']:.2f} | {c['exact']:.2f} | "
                     f"{c['fast']:.2f} | {c['prev']:.2f} | {c['now']:.2f} | "
                     f"{c['now'] / c['prev']:.2f} | {c['now'] / c['start']:.2f} | "
                     f"{w['start']:.2f} | {w['now']:.2f} | "
                     f"{'equal' if same == 1.0 else f'{same:.6f}'} | "
                     f"{min(r['min_cosine_vs_start'].values()):.6f} |")
    c, w = tot["cpu_s"], tot["wall_s"]
    lines += [f"| **all** | | {c['start']:.2f} | {c['exact']:.2f} | {c['fast']:.2f} | "
              f"{c['prev']:.2f} | {c['now']:.2f} | {c['now'] / c['prev']:.2f} | "
              f"{c['now'] / c['start']:.2f} | {w['start']:.2f} | {w['now']:.2f} | | |", ""]
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
    ap.add_argument("--prev", default="2309bd0", help="commit of the 'prev' configuration")
    ap.add_argument("--json", type=Path, default=RESULTS / "demo_attribution.json")
    ap.add_argument("--table", type=Path, help="write the markdown section here")
    args = ap.parse_args()
    old = {"start": attribution_at(args.start), "prev": attribution_at(args.prev)}
    results = []
    for name in args.models:
        results.append(run_model(name, args, old))
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
