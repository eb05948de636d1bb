"""How noisy is the oracle itself? Bootstrap the transfer test scenes (issue 17).

    onnxattr bench taskonomy-mini --committed --world N --out bench/wN      # N = 1, 2, 3
    python benchmarks/oracle_bootstrap.py --world 1=bench/w1 --world 2=bench/w2 --world 3=bench/w3 \\
        --out benchmarks/results/oracle_bootstrap

Every (target, source) transfer of a world is measured again with the oracle's own head recipe,
keeping each test scene's share of the score (`measure_transfer(scenes=True)`; the scores equal
the committed `oracle_full.csv`, checked below). A draw resamples the world's transfer scenes
with replacement, once for all targets and sources, and rescores every pair on its test scenes
so drawn: an oracle as another test set would have measured it. Reported per world:

- **the oracle's own stability**: how often each target's top-5 relevant sources (the target
  itself excluded, as in the protocol) and its top source stay what the full test set says;
- **estimators against the resampled oracles**: P@3 and Spearman on the full test set with the
  95% interval over draws. This interval is the oracle's share of the noise; the intervals in
  `benchmarks/worlds/` resample targets instead.
"""

from __future__ import annotations

import argparse
import json
import pickle
import time
from pathlib import Path

import numpy as np

from onnxattr.analysis.estimators import compute_affinity
from onnxattr.analysis.evaluation import Oracle, read_oracle
from onnxattr.analysis.selection import DEFAULT_ESTIMATOR, target_scores
from onnxattr.benchmark.oracle import transfer_targets
from onnxattr.benchmark.world import Config, committed_dir
from onnxattr.space_reader import read_space
from onnxattr.transfer import measure_transfer

ESTIMATORS = [
    DEFAULT_ESTIMATOR, "combine:saliency=0.6,svcca+hub=0.4", "combine:elrp+g16+csls3=0.3,svcca+hub=0.7",
    "cka", "svcca+hub", "elrp", "saliency",
]
TOP = 5


def top_sets(oracle: Oracle, k: int) -> list[tuple[str, ...]]:
    """Each target's k best sources, the target itself excluded (ties: column order)."""
    out = []
    for i, t in enumerate(oracle.targets):
        cand = [(v, -j, s) for j, (s, v) in enumerate(zip(oracle.sources, oracle.values[i]))
                if s != t and np.isfinite(v)]
        out.append(tuple(s for _, _, s in sorted(cand, reverse=True)[:k]))
    return out


def world_bootstrap(number: int, folder: Path, draws: int, seed: int) -> dict:
    cfg = Config(world=number)
    manifest = json.loads((committed_dir(number) / "manifest.json").read_text())["models"]
    tasks = [e["task"] for e in manifest if e["name"] == e["task"]]
    targets = transfer_targets(cfg, tasks)
    space = folder / "space.h5"
    with read_space(space) as reader:
        sources = [e["name"] for e in manifest if reader.has_model(e["name"])]
    kept = folder / "oracle_scenes.pkl"  # the measurement, so that a rerun only redraws
    if kept.is_file():
        measured, matrix, stats = pickle.loads(kept.read_bytes())
    else:
        t0 = time.perf_counter()
        res = measure_transfer(space, targets, sources, use_cache=False, scenes=True,
                               log=lambda m: print(f"world {number}: {m}", flush=True))
        measured, matrix, stats = time.perf_counter() - t0, res.matrix(), res.scenes
        kept.write_bytes(pickle.dumps((measured, matrix, stats)))
    full = Oracle(tasks, sources, matrix)
    committed = read_oracle(committed_dir(number) / "oracle_full.csv")
    cols = [committed.sources.index(s) for s in sources]
    rows = [committed.targets.index(t) for t in tasks]
    gap = float(np.nanmax(np.abs(committed.values[np.ix_(rows, cols)] - full.values)))

    rng = np.random.default_rng(seed + number)
    n_scenes = cfg.n_transfer
    mats = {e: compute_affinity(space, e)[0] for e in ESTIMATORS}
    full_scores = {e: target_scores(m, full, TOP).per_target() for e, m in mats.items()}
    top_full, first_full = top_sets(full, TOP), top_sets(full, 1)
    same_top, overlap, same_first = [], [], []
    per_draw: dict[str, dict[str, list[float]]] = {e: {"P@3": [], "spearman": []} for e in mats}
    for _ in range(draws):
        counts = np.bincount(rng.integers(0, n_scenes, n_scenes), minlength=n_scenes)
        values = np.array([[stats[(t, s)].score(counts[stats[(t, s)].test])
                            for s in sources] for t in tasks])
        drawn = Oracle(tasks, sources, values)
        tops, firsts = top_sets(drawn, TOP), top_sets(drawn, 1)
        same_top.append([a == b for a, b in zip(map(set, tops), map(set, top_full))])
        overlap.append([len(set(a) & set(b)) / TOP for a, b in zip(tops, top_full)])
        same_first.append([a == b for a, b in zip(firsts, first_full)])
        for e, m in mats.items():
            sc = target_scores(m, drawn, TOP).per_target()
            for k in per_draw[e]:
                per_draw[e][k].append(float(np.nanmean(sc[k])))

    def interval(v: list[float]) -> list[float]:
        return [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))]

    return {
        "targets": tasks, "sources": sources, "draws": draws, "measure_seconds": round(measured, 1),
        "max_abs_gap_to_committed_oracle": gap,
        "oracle": {
            "top5_same_set": float(np.mean(same_top)),
            "top5_overlap": float(np.mean(overlap)),
            "top1_same": float(np.mean(same_first)),
            "per_target": {t: {"top5_same_set": float(np.mean([d[i] for d in same_top])),
                               "top1_same": float(np.mean([d[i] for d in same_first]))}
                           for i, t in enumerate(tasks)},
        },
        "estimators": {e: {k: {"full": float(np.nanmean(full_scores[e][k])),
                               "mean": float(np.mean(v)), "ci": interval(v)}
                           for k, v in per_draw[e].items()} for e in mats},
    }


def markdown(r: dict) -> str:
    worlds = list(r["worlds"])
    lines = [
        "# The oracle's test-scene bootstrap",
        "",
        f"Generated by `benchmarks/oracle_bootstrap.py` ({r['draws']} draws of the transfer scenes "
        "per world). Each world's 22 × 12 transfers were measured again with per-scene sums; the "
        "largest gap to the committed `oracle_full.csv` is "
        + ", ".join(f"{w}: {x['max_abs_gap_to_committed_oracle']:.1e}" for w, x in r["worlds"].items())
        + ".",
        "",
        "## The oracle's own stability (share of draws)",
        "",
        "| | " + " | ".join(worlds) + " |",
        "|---|" + "---|" * len(worlds),
    ]
    for key, label in (("top5_same_set", "top-5 relevant set unchanged"),
                       ("top5_overlap", "top-5 overlap with the full test set's"),
                       ("top1_same", "top source unchanged")):
        lines.append(f"| {label} | " + " | ".join(f"{r['worlds'][w]['oracle'][key]:.3f}"
                                                  for w in worlds) + " |")
    lines += ["", "Per target, top-5 set unchanged / top source unchanged:", "",
              "| target | " + " | ".join(worlds) + " |", "|---|" + "---|" * len(worlds)]
    for t in r["worlds"][worlds[0]]["targets"]:
        cells = []
        for w in worlds:
            p = r["worlds"][w]["oracle"]["per_target"].get(t)
            cells.append(f"{p['top5_same_set']:.2f} / {p['top1_same']:.2f}" if p else "–")
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    for metric in ("P@3", "spearman"):
        lines += ["", f"## {metric} against the resampled oracles: full test set (95% interval "
                  "over draws)", "", "| estimator | " + " | ".join(worlds) + " |",
                  "|---|" + "---|" * len(worlds)]
        for e in r["worlds"][worlds[0]]["estimators"]:
            cells = []
            for w in worlds:
                s = r["worlds"][w]["estimators"][e][metric]
                cells.append(f"{s['full']:.3f} ({s['ci'][0]:.3f}–{s['ci'][1]:.3f})")
            lines.append(f"| `{e}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", action="append", required=True, metavar="N=FOLDER",
                    help="a world's folder with its space.h5 (from the committed encoders)")
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/oracle_bootstrap"))
    args = ap.parse_args(argv)
    worlds = {int(n): Path(f) for n, f in (w.split("=", 1) for w in args.world)}
    result = {"draws": args.draws, "seed": args.seed, "worlds": {
        f"world {n}": world_bootstrap(n, f, args.draws, args.seed) for n, f in sorted(worlds.items())
    }}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
