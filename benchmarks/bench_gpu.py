"""s/img per attribution method for a ResNet-50 encoder, and the projected cost of a study.

    bash benchmarks/gpu.sh                       # cuda, batch 64, 256x256 (Taskonomy-size)
    python benchmarks/bench_gpu.py --device cpu --batch 2 --size 64 --arch resnet18   # a CPU smoke run

The encoder goes through onnxattr's own path: torchvision ResNet (random weights: the cost does
not depend on them; nothing is downloaded) -> ONNX -> truncated at the pooled features -> fix-ups
-> onnx2torch -> verified against onnxruntime on the device (CUDA execution provider where
onnxruntime-gpu is installed, TF32 off) -> `attribute()` per method, timed after a warm-up batch
with the device synchronised. Printed: s/img per method, s/img of the three methods as `add` runs
them (saliency and grad_input share one backward pass), the one-off cost per model (load,
convert, verify) and the projection for ``--models`` encoders x ``--project-images`` x 3 methods.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from onnxattr.attribution import attribute, get_method  # noqa: E402
from onnxattr.device import resolve_device  # noqa: E402
from onnxattr.onnxgraph import graph as onnx_graph  # noqa: E402
from onnxattr.onnxgraph.convert import ort_providers, to_torch, verify  # noqa: E402
from onnxattr.onnxgraph.fixups import fix_up  # noqa: E402

METHODS = ("saliency", "grad_input", "elrp")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def export_encoder(arch: str, size: int, path: Path) -> str:
    """torchvision ``arch`` (random weights) to ONNX; returns the pooled-feature tensor name."""
    net = getattr(torchvision.models, arch)(weights=None).eval()
    net.fc = torch.nn.Identity()  # the graph output is then the pooled (pre-logits) features
    torch.onnx.export(
        net,
        (torch.zeros(1, 3, size, size),),
        str(path),
        dynamo=False,
        input_names=["image"],
        output_names=["features"],
        dynamic_axes={"image": {0: "n"}, "features": {0: "n"}},
        opset_version=17,
    )
    return "features"


def timed(device: torch.device, fn, repeat: int) -> float:
    fn()  # warm-up: cuDNN autotuning, allocator growth
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / repeat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--size", type=int, default=256, help="input side (Taskonomy: 256)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3, help="timed batches per method")
    ap.add_argument("--models", type=int, default=20)
    ap.add_argument("--project-images", type=int, default=1000)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    out: dict = {
        "device": str(device),
        "arch": args.arch,
        "size": args.size,
        "batch": args.batch,
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{args.arch}.onnx"
        t0 = time.perf_counter()
        tensor = export_encoder(args.arch, args.size, path)
        out["export_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        model = onnx_graph.load(path)
        encoder, _ = fix_up(onnx_graph.truncate(model, tensor), [1, 3, args.size, args.size])
        converted = to_torch(encoder)
        converted.module.to(device)
        x = torch.randn(args.batch, 3, args.size, args.size)
        err = verify(converted, encoder, x[: min(8, args.batch)].numpy(), rtol=1e-3)
        out["per_model_s"] = time.perf_counter() - t0
        out["verify_rel_err"] = err
        out["verify_provider"] = str(ort_providers(device)[0])
    x = x.to(device)
    per_method = {}
    for name in METHODS:
        m = get_method(name)
        per_method[name] = (
            timed(device, lambda m=m: attribute(converted, x, [m]), args.repeat) / args.batch
        )
    all3 = [get_method(n) for n in METHODS]
    together = timed(device, lambda: attribute(converted, x, all3), args.repeat) / args.batch
    out.update(s_per_img=per_method, s_per_img_all3=together)
    n_img = args.models * args.project_images
    out["projection"] = {
        "models": args.models,
        "images": args.project_images,
        "methods": list(METHODS),
        "attribution_h": together * n_img / 3600,
        "total_h": (together * n_img + out["per_model_s"] * args.models) / 3600,
        "methods_separately_h": sum(per_method.values()) * n_img / 3600,
    }
    if device.type == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    print(
        f"{args.arch} at {args.size}x{args.size}, batch {args.batch} on {out['gpu'] or device} "
        f"(verified against onnxruntime {out['verify_provider']}: rel. err {err:.1e})"
    )
    for name, v in per_method.items():
        print(f"  {name:11s} {v * 1e3:8.2f} ms/img")
    print(
        f"  all three as `add` runs them: {together * 1e3:.2f} ms/img; one-off per model "
        f"(load, convert, verify): {out['per_model_s']:.1f} s"
    )
    p = out["projection"]
    print(
        f"projected: {args.models} encoders x {args.project_images} probe images x 3 methods = "
        f"{p['total_h']:.2f} h ({p['attribution_h']:.2f} h attribution)"
    )
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
