"""Issue 17's instrument check: does a changed training recipe put self-transfer first?

    nice -n 15 python benchmarks/instrument_check.py --epochs 12 36 --world 1    # recipe 2, 3x
    nice -n 15 python benchmarks/instrument_check.py --epochs 12 --lr 6e-3       # 3x the rate
    nice -n 15 python benchmarks/instrument_check.py --epochs 12 36 --standardise  # 1 - R² loss
    nice -n 15 python benchmarks/instrument_check.py --epochs 12 [--standardise] \\
        --twins depth normals segment_semantic                                   # + seed twins

Default subset: depth, normals, reshading, edge_occlusion (self-transfer not first in the committed
world-0 oracle) and segment_semantic (the best source of every 3D target there).

A subset experiment, not a benchmark run: the subset's task networks are trained as recipe 2
trains them (:func:`onnxattr.benchmark.models.train`, world ``--world``'s scenes and initial
weights) with only the named setting changed, and the sub-oracle (sources = targets = the subset)
is measured with the oracle's own head (:func:`onnxattr.transfer.heads.fit_score`, seed 0) on the
world's 1000 transfer scenes. Features come from the torch encoder in eval mode rather than its
ONNX export (the same function; no space is built). Beside each self score it records the trained
decoder's own score on the head's test part: the head has the decoder's form, so a self score far
below it would point at the head, one close to it at the encoder. No estimator is read.

Each recipe is a run keyed by its settings in ``--out``.json (runs of other invocations are kept);
``--out``.md is rewritten from all runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from onnxattr.benchmark.models import TaskNet, init_seed, target_scaling, train  # noqa: E402
from onnxattr.benchmark.scenes import TASKS, Scenes, generate  # noqa: E402
from onnxattr.benchmark.world import Config, ModelSpec, scene_seeds  # noqa: E402
from onnxattr.transfer.heads import _miou, _r2, fit_score, split  # noqa: E402

SUBSET = ("depth", "normals", "reshading", "edge_occlusion", "segment_semantic")


def scaled(scenes: Scenes, task: str, mu: np.ndarray, sd: float) -> Scenes:
    return replace(scenes, targets={**scenes.targets, task: (scenes.targets[task] - mu) / sd})


def own_readout(
    net: TaskNet, x: torch.Tensor, y: np.ndarray, te: np.ndarray, mu: np.ndarray, sd: float
) -> float:
    """The trained decoder's score on the head's test part (R² or mean IoU, as the head's)."""
    with torch.no_grad():
        pred = net(x[te])[0].numpy() * sd + mu
    task = net.task
    if task.kind == "dense_cls":
        return _miou(pred.argmax(1), y[te], task.channels)
    c = task.channels
    return _r2(pred.transpose(0, 2, 3, 1).reshape(-1, c), y[te].transpose(0, 2, 3, 1).reshape(-1, c))


def run_recipe(
    tasks: list[str],
    epochs: int,
    lr: float,
    world: int,
    cfg: Config,
    standardise: bool = False,
    twins: tuple[str, ...] = (),
) -> dict:
    """Train the subset (and the seed-1 twins of `twins`, as the benchmark names them: TASK.s1)
    under one recipe; the sub-oracle, self ranks, seed-swap stability and training figures."""
    seeds = scene_seeds(world)
    t0 = time.perf_counter()
    train_set = generate(cfg.n_train, seeds["train"])
    val_set = generate(cfg.n_val, seeds["val"])
    transfer = generate(cfg.n_transfer, seeds["transfer"])
    feats: dict[str, dict[str, np.ndarray]] = {}  # source -> target -> encoder features
    models: dict[str, dict] = {}
    specs = [ModelSpec(t, t) for t in tasks] + [ModelSpec(f"{t}.s1", t, seed=1) for t in twins]
    for spec in specs:
        name = spec.name
        pre = spec.pre()
        seed = init_seed(name, world)
        torch.manual_seed(seed)
        net = TaskNet(TASKS[spec.task])
        ts = time.perf_counter()
        mu, sd = np.zeros((1, 1, 1, 1), np.float32), 1.0
        tr_set, va_set = train_set, val_set
        if standardise and TASKS[spec.task].kind == "dense_reg":
            mu, sd = target_scaling(train_set.targets[spec.task])
            tr_set = scaled(train_set, spec.task, mu, sd)
            va_set = scaled(val_set, spec.task, mu, sd)
        res = train(net, pre, tr_set, va_set, epochs, seed, cfg.batch_size, lr=lr)
        secs = time.perf_counter() - ts
        net.eval()
        feats[name] = {}
        with torch.no_grad():
            for t in tasks:
                feats[name][t] = net.encoder(pre.apply(transfer.inputs(t))).numpy()
        y = transfer.targets[spec.task]
        _, _, te = split(len(y), 0)
        models[name] = {
            "train_seconds": round(secs, 1),
            "train_loss_first_last": [res.losses[0], res.losses[-1]],
            "val_loss": res.val_loss,
            "adam_steps": epochs * -(-cfg.n_train // cfg.batch_size),
            "own_decoder_test": own_readout(net, pre.apply(transfer.inputs(spec.task)), y, te, mu, sd),
        }
        print(f"  trained {name} ({epochs} epochs, lr {lr}) in {secs:.0f} s, "
              f"val loss {res.val_loss:.4f}", flush=True)
    scores = {
        t: {
            s: fit_score(feats[s][t], transfer.targets[t], TASKS[t].kind, TASKS[t].channels).score
            for s in feats
        }
        for t in tasks
    }
    ranks = {}
    for t, row in scores.items():
        order = sorted(tasks, key=lambda s: -row[s])
        ranks[t] = {"self_rank": order.index(t) + 1, "best": order[0]}
    # as onnxattr.benchmark.sanity: each target's ranking of the other primaries, then with the
    # seed-1 twins in their place
    swap = {}
    for t, row in scores.items():
        others = [s for s in tasks if s != t]
        alt = [f"{s}.s1" if s in twins else s for s in others]
        if twins and alt != others:
            swap[t] = float(spearmanr([row[s] for s in others], [row[s] for s in alt]).statistic)
    return {
        "tasks": tasks,
        "epochs": epochs,
        "lr": lr,
        "standardised_targets": standardise,
        "world": world,
        "scene_seeds": seeds,
        "n_train": cfg.n_train,
        "n_transfer": cfg.n_transfer,
        "batch_size": cfg.batch_size,
        "scores": scores,
        "ranks": ranks,
        "self_first": sum(r["self_rank"] == 1 for r in ranks.values()),
        "twins": list(twins),
        "seed_swap_row_spearman": swap,
        "seed_swap_row_spearman_mean": float(np.mean(list(swap.values()))) if swap else None,
        "models": models,
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "loadavg_end": list(os.getloadavg()),
        "threads": torch.get_num_threads(),
    }


def markdown(runs: dict[str, dict]) -> str:
    out = ["# Instrument check (issue 17): sub-oracles of a task subset\n",
           "Generated by `benchmarks/instrument_check.py`. Rows = targets, columns = sources "
           "(the subset's encoders); score = the oracle head's test R² (mean IoU for "
           "segment_semantic); **bold** = best primary source of the row; TASK.s1 = the task's "
           "seed-1 twin, not counted in the ranks.\n"]
    for key, r in runs.items():
        tasks = r["tasks"]
        out.append(f"## {key}: {r['epochs']} epochs ({r['models'][tasks[0]]['adam_steps']} Adam "
                   f"steps), lr {r['lr']}, world {r['world']}"
                   + (", regression targets standardised" if r.get("standardised_targets") else "")
                   + "\n")
        out.append(f"Self-transfer first for **{r['self_first']} of {len(tasks)}** targets. "
                   f"Wall {r['wall_seconds'] / 60:.1f} min, {r['threads']} thread(s), load "
                   f"average at the end {r['loadavg_end'][0]:.1f} (1 min) / "
                   f"{r['loadavg_end'][1]:.1f} (5 min).\n")
        if r.get("seed_swap_row_spearman_mean") is not None:
            rho = ", ".join(f"{t} {v:.2f}" for t, v in r["seed_swap_row_spearman"].items())
            out.append(f"Seed swap (twins replace their primaries as sources; Spearman of each "
                       f"target's ranking of the other {len(tasks) - 1}): mean "
                       f"**{r['seed_swap_row_spearman_mean']:.2f}** ({rho}).\n")
        sources = list(r["scores"][tasks[0]])
        out.append("| target | " + " | ".join(sources) + " | self rank | own decoder |")
        out.append("|---" * (len(sources) + 3) + "|")
        for t in tasks:
            row = r["scores"][t]
            best = r["ranks"][t]["best"]
            cells = [f"**{row[s]:.3f}**" if s == best else f"{row[s]:.3f}" for s in sources]
            out.append(f"| {t} | " + " | ".join(cells)
                       + f" | {r['ranks'][t]['self_rank']} | "
                       f"{r['models'][t]['own_decoder_test']:.3f} |")
        out.append("")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", nargs="+", default=list(SUBSET), choices=sorted(TASKS))
    ap.add_argument("--epochs", nargs="+", type=int, default=[12, 36],
                    help="one recipe per value (recipe 2: 12)")
    ap.add_argument("--lr", type=float, default=2e-3, help="peak one-cycle rate (recipe 2: 2e-3)")
    ap.add_argument("--standardise", action="store_true",
                    help="train regression tasks on (y - channel mean) / pooled sd (recipe 2: raw y)")
    ap.add_argument("--twins", nargs="*", default=[], choices=sorted(TASKS),
                    help="also train TASK.s1 (seed 1) for these and measure seed-swap stability")
    ap.add_argument("--world", type=int, default=1, help="not 0: world 0 is the committed one")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/instrument_check"))
    ap.add_argument("--table", action="store_true", help="only rewrite --out.md from --out.json")
    a = ap.parse_args()
    jpath = a.out.with_suffix(".json")
    if a.table:
        a.out.with_suffix(".md").write_text(markdown(json.loads(jpath.read_text())))
        return
    if a.world == 0:
        ap.error("--world 0 is the committed world the recipe was tuned on; use a fresh one (1+)")
    torch.set_num_threads(a.threads)
    for ep in a.epochs:
        key = f"world{a.world}-e{ep}-lr{a.lr:g}{'-std' if a.standardise else ''}-" + "+".join(
            a.tasks
        )
        print(f"{key}: load average {os.getloadavg()[0]:.1f}", flush=True)
        r = run_recipe(list(a.tasks), ep, a.lr, a.world, Config(), a.standardise, tuple(a.twins))
        runs = json.loads(jpath.read_text()) if jpath.is_file() else {}
        runs[key] = r
        jpath.parent.mkdir(parents=True, exist_ok=True)
        jpath.write_text(json.dumps(runs, indent=1))
        a.out.with_suffix(".md").write_text(markdown(runs))
        print(f"{key}: self first {r['self_first']}/{len(a.tasks)} in {r['wall_seconds']:.0f} s",
              flush=True)


if __name__ == "__main__":
    main()
