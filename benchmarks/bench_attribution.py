"""Per-image cost of each attribution method on a ResNet-50-size model, beside an onnxruntime forward.

    python benchmarks/bench_attribution.py [--batch 8] [--repeats 3] [--device cpu]

Everything is measured in one run on the same machine, so the ratios are what to read.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
import torch
import torchvision

from onnxattr.attribution import attribute, get_method
from onnxattr.onnxgraph import graph as onnx_graph
from onnxattr.onnxgraph.convert import to_torch
from onnxattr.onnxgraph.fixups import fix_up


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.manual_seed(0)
    net = torchvision.models.resnet50(weights=None).eval()
    for m in net.modules():  # trained-like BN statistics (random init folds to identical zero biases)
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(args.batch, 3, 224, 224)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "resnet50.onnx"
        torch.onnx.export(net, x[:1], str(path), dynamo=False, opset_version=17,
                          input_names=["input"], dynamic_axes={"input": {0: "batch"}})
        full = onnx_graph.load(path)
    # The paper's encoder: everything up to the pooled pre-logits features.
    tensor = onnx_graph.resolve_encoder(full, next(n.name for n in full.graph.node
                                                   if n.op_type == "GlobalAveragePool"))
    encoder, _ = fix_up(onnx_graph.truncate(full, tensor), [args.batch, 3, 224, 224])
    session = ort.InferenceSession(encoder.SerializeToString(), providers=["CPUExecutionProvider"])
    net = to_torch(encoder)
    net.module.to(args.device)
    xd = x.to(args.device)
    xn = x.numpy()

    rows = [("onnxruntime forward", best_of(lambda: session.run(None, {"input": xn}), args.repeats))]
    with torch.no_grad():
        rows.append(("torch forward", best_of(lambda: net(xd), args.repeats)))
    for names in (["saliency"], ["grad_input"], ["elrp"], ["lrp"],
                  ["saliency", "grad_input", "elrp", "lrp"]):
        methods = [get_method(n) for n in names]
        run = lambda ms=methods: attribute(net, xd, ms)  # noqa: E731
        rows.append((" + ".join(names), best_of(run, args.repeats)))
    base = rows[0][1]
    print(f"ResNet-50 encoder (up to GlobalAveragePool), batch {args.batch}, 224×224, "
          f"{torch.get_num_threads()} threads, device {args.device}")
    print(f"{'what':40s} {'s/image':>9s} {'× ORT fwd':>10s}")
    for name, t in rows:
        print(f"{name:40s} {t / args.batch:9.4f} {t / base:10.2f}")


if __name__ == "__main__":
    main()
