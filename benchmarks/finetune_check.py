"""Does the frozen linear-probe oracle rank sources as fine-tuning does? (issue 17)

    python benchmarks/finetune_check.py --world 1 --out benchmarks/results/finetune_check

For a subset of a committed world's targets and PyTorch sources: each source's encoder (the
committed ONNX file, truncated at its encoder node and converted to torch as ``add`` converts it)
gets a fresh decoder of the oracle head's form (3×3 convolution to 4·C, pixel shuffle), and both
are trained together, encoder unfrozen, on the oracle's own training part of the world's transfer
scenes (same split, same inputs), regression targets standardised as recipe 3 trains. The score
is the oracle's metric on the oracle's test part (pooled R², mean IoU). Per target, the fine-tuned
ranking of the sources is compared with the frozen oracle's (``oracle_full.csv``): Spearman,
whether the top source is the same, and the overlap of the top 3. No estimator is involved.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from torch import nn

from onnxattr.analysis.evaluation import read_oracle
from onnxattr.benchmark.models import target_scaling
from onnxattr.benchmark.scenes import DENSE, TASKS, generate
from onnxattr.benchmark.world import Config, committed_dir, scene_seeds
from onnxattr.onnxgraph.convert import to_torch
from onnxattr.transfer.heads import _miou, _r2, split
from onnxattr.transfer.sources import EncoderRunner

SOURCES = ("depth", "normals", "reshading", "edge_texture", "edge_occlusion", "segment_semantic")
TARGETS = ("depth", "reshading", "edge_occlusion", "segment_semantic")


def finetune(runner: EncoderRunner, task: str, scenes, epochs: int, lr: float, seed: int) -> float:
    """Encoder + fresh sub-pixel decoder trained on the oracle's training part; test score."""
    spec = TASKS[task]
    x = runner.pre.apply(scenes.inputs(task))
    y = scenes.targets[task]
    tr, _, te = split(len(y), 0)
    enc = to_torch(runner.model).module
    for p in enc.parameters():
        p.requires_grad_(True)
    axis = runner.encoder.channel_axis.axis

    def features(xb: torch.Tensor) -> torch.Tensor:
        z = enc(xb)
        return torch.movedim(z, axis, 1) if axis != 1 else z

    torch.manual_seed(seed)
    with torch.no_grad():
        width = features(x[:2]).shape[1]
    head = nn.Sequential(nn.Conv2d(width, 4 * spec.channels, 3, padding=1), nn.PixelShuffle(2))
    mu, sd = np.zeros((1, 1, 1, 1), np.float32), 1.0
    if spec.kind == "dense_reg":
        mu, sd = target_scaling(y[tr])
    yt = torch.as_tensor((y - mu) / sd if spec.kind == "dense_reg" else y)

    def predict(xb: torch.Tensor) -> torch.Tensor:
        out = head(features(xb))
        if out.shape[-1] != DENSE:
            out = F.interpolate(out, size=(DENSE, DENSE), mode="bilinear", align_corners=False)
        return out

    params = [*enc.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    bs = 32
    steps = epochs * -(-len(tr) // bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    enc.train()
    for _ in range(epochs):
        order = torch.as_tensor(tr)[torch.randperm(len(tr), generator=gen)]
        for k in range(0, len(order), bs):
            idx = order[k : k + bs]
            pred = predict(x[idx])
            loss = (F.mse_loss(pred, yt[idx]) if spec.kind == "dense_reg"
                    else F.cross_entropy(pred, yt[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    enc.eval()
    with torch.no_grad():
        pred = torch.cat([predict(x[te[k : k + 100]]) for k in range(0, len(te), 100)]).numpy()
    if spec.kind == "dense_cls":
        return _miou(pred.argmax(1), y[te], spec.channels)
    c = spec.channels
    pred = pred * sd + mu
    return _r2(pred.transpose(0, 2, 3, 1).reshape(-1, c), y[te].transpose(0, 2, 3, 1).reshape(-1, c))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", type=int, default=1)
    ap.add_argument("--sources", nargs="+", default=list(SOURCES))
    ap.add_argument("--targets", nargs="+", default=list(TARGETS))
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/finetune_check"))
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    data = committed_dir(args.world)
    manifest = {e["name"]: e for e in json.loads((data / "manifest.json").read_text())["models"]}
    frozen = read_oracle(data / "oracle_full.csv")
    scenes = generate(Config().n_transfer, scene_seeds(args.world)["transfer"])
    runners = {
        s: EncoderRunner.from_file(data / manifest[s]["file"], manifest[s]["encoder_node"],
                                   manifest[s]["preprocessing"])
        for s in args.sources
    }
    tuned: dict[str, dict[str, float]] = {}
    for t in args.targets:
        for s in args.sources:
            ts = time.perf_counter()
            tuned.setdefault(t, {})[s] = finetune(runners[s], t, scenes, args.epochs, args.lr, 0)
            f = frozen.values[frozen.targets.index(t), frozen.sources.index(s)]
            print(f"{s} -> {t}: fine-tuned {tuned[t][s]:.3f}, frozen {f:.3f} "
                  f"({time.perf_counter() - ts:.0f} s)", flush=True)
    rows = {}
    for t in args.targets:
        a = [frozen.values[frozen.targets.index(t), frozen.sources.index(s)] for s in args.sources]
        b = [tuned[t][s] for s in args.sources]
        top = lambda v: {args.sources[i] for i in np.argsort(v)[::-1][:3]}  # noqa: E731
        rows[t] = {
            "frozen": dict(zip(args.sources, map(float, a))),
            "fine_tuned": tuned[t],
            "spearman": float(spearmanr(a, b).statistic),
            "same_top1": bool(np.argmax(a) == np.argmax(b)),
            "top3_overlap": len(top(a) & top(b)),
        }
    result = {
        "world": args.world,
        "sources": args.sources,
        "targets": args.targets,
        "epochs": args.epochs,
        "lr": args.lr,
        "rows": rows,
        "mean_spearman": float(np.mean([r["spearman"] for r in rows.values()])),
        "same_top1": sum(r["same_top1"] for r in rows.values()),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


def markdown(r: dict) -> str:
    lines = [
        f"World {r['world']}; encoder unfrozen, fresh sub-pixel decoder, {r['epochs']} epochs "
        f"(Adam, one-cycle lr {r['lr']:g}) on the oracle's training part; test score as the "
        "oracle's (R², mean IoU). Cells: fine-tuned / frozen. Wall "
        f"{r['seconds'] / 60:.1f} min.",
        "",
        "| target | " + " | ".join(r["sources"]) + " | Spearman | same top 1 | top-3 overlap |",
        "|---|" + "---|" * (len(r["sources"]) + 3),
    ]
    for t, row in r["rows"].items():
        cells = [f"{row['fine_tuned'][s]:.3f} / {row['frozen'][s]:.3f}" for s in r["sources"]]
        lines.append(f"| {t} | " + " | ".join(cells) + f" | {row['spearman']:.2f} | "
                     f"{'yes' if row['same_top1'] else 'no'} | {row['top3_overlap']}/3 |")
    lines += ["", f"Mean Spearman **{r['mean_spearman']:.2f}**; same top source for "
              f"**{r['same_top1']} of {len(r['rows'])}** targets."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
