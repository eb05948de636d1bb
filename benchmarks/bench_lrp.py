"""Per-image cost of `lrp` relative to `grad_input` on a ResNet-50-size model, with Zennit for scale.

ResNet-50 (random weights, torchvision) is exported to ONNX (legacy exporter, opset 17), converted
as the pipeline does, and timed side by side in one run: grad_input and lrp per preset on the
converted net, and on the torch original gradient×input and Zennit's EpsilonPlusFlat (with its
ResNet canonizer). Timings are interleaved per repeat and the median is reported.

    python benchmarks/bench_lrp.py --batch 8 --repeats 5 [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
import warnings
from collections.abc import Callable

import onnx
import torch
import torchvision
from rich.console import Console
from rich.progress import track
from rich.table import Table
from zennit.attribution import Gradient
from zennit.composites import EpsilonAlpha2Beta1Flat, EpsilonPlusFlat
from zennit.torchvision import ResNetCanonizer

from onnxattr.attribution import attribute, get_method
from onnxattr.attribution import lrp as _lrp  # noqa: F401  (registers `lrp`)
from onnxattr.onnxgraph.convert import to_torch

warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")


def export(model: torch.nn.Module, size: int) -> onnx.ModelProto:
    f = io.BytesIO()
    torch.onnx.export(
        model,
        torch.zeros(1, 3, size, size),
        f,
        dynamo=False,
        opset_version=17,
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
    )
    return onnx.load_from_string(f.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--json", help="also write the numbers here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console()

    torch.manual_seed(0)
    net = torchvision.models.resnet50(weights=None).eval()
    net.fc = torch.nn.Identity()  # encoder: pooled features, as an encoder-node truncation gives
    # trained-like BN statistics (and distinct folded biases, so no Identity-deduplicated weights)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
    for p in net.parameters():
        p.requires_grad_(False)
    converted = to_torch(export(net, args.size))
    x = torch.randn(args.batch, 3, args.size, args.size)

    def onnx_pass(name: str, **params: object) -> Callable[[], None]:
        method = get_method(name, **params)
        return lambda: attribute(converted, x, [method])

    def torch_grad_input() -> None:
        xi = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(net(xi).flatten(1).mean(1).sum(), xi)
        (xi.detach() * g).sum()

    def zennit(composite: type) -> Callable[[], None]:
        def run() -> None:
            with Gradient(model=net, composite=composite(canonizers=[ResNetCanonizer()])) as attr:
                attr(x, lambda y: y.detach() / y[0].numel())

        return run

    cases: dict[str, Callable[[], None]] = {
        "grad_input (ONNX graph)": onnx_pass("grad_input"),
        "lrp epsilon (ONNX graph)": onnx_pass("lrp", preset="epsilon"),
        "lrp epsilon_plus_flat (ONNX graph)": onnx_pass("lrp", preset="epsilon_plus_flat"),
        "lrp epsilon_alpha2_beta1_flat (ONNX graph)": onnx_pass(
            "lrp", preset="epsilon_alpha2_beta1_flat"
        ),
        "gradient×input (torch original)": torch_grad_input,
        "Zennit EpsilonPlusFlat (torch original)": zennit(EpsilonPlusFlat),
        "Zennit EpsilonAlpha2Beta1Flat (torch original)": zennit(EpsilonAlpha2Beta1Flat),
    }
    for fn in cases.values():  # warm-up: allocator, rule caches
        fn()
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in track(range(args.repeats), description="timing", console=console):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) / args.batch)
    per_image = {k: statistics.median(v) for k, v in times.items()}

    base_onnx = per_image["grad_input (ONNX graph)"]
    base_torch = per_image["gradient×input (torch original)"]
    table = Table(
        title=f"ResNet-50, {args.size}px, batch {args.batch}, {torch.get_num_threads()} threads, "
        f"median of {args.repeats}"
    )
    table.add_column("method")
    table.add_column("ms / image", justify="right")
    table.add_column("× grad_input", justify="right")
    for name, t in per_image.items():
        base = base_torch if "torch original" in name else base_onnx
        table.add_row(name, f"{1000 * t:.1f}", f"{t / base:.2f}")
    console.print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "per_image_s": per_image,
                    "batch": args.batch,
                    "size": args.size,
                    "threads": torch.get_num_threads(),
                },
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
