"""What labels buy: the label-based estimates (`onnxattr transfer --estimate`) on the committed
mini-Taskonomy world at 50, 200 and 1,000 labelled images, beside the label-free estimators.

    python benchmarks/label_efficiency.py --out benchmarks/results/label_efficiency
    python benchmarks/label_efficiency.py --world 3 --out benchmarks/results/label_efficiency_world3

For every target task and every one of the 22 committed encoders as source, each estimate scores
the source from its frozen features on n labelled scenes (no head fitted); the rankings are scored
against the committed oracles (`oracle_full.csv`: 22 sources, `oracle.csv`: the 12 task networks)
with the paper's protocol (`onnxattr.analysis.evaluation.evaluate`: relevant = oracle top 5, the
target itself excluded). The labelled scenes are drawn from a pool rendered with its own seed
(:data:`POOL_SEED` + 100·world; world N's train, validation, transfer and probe sets are seeds
100·N + 1–4), so the
estimates never see the oracle's scenes; every label draw (`--seeds`) takes n pool scenes without
replacement and its own pixel sample, and the spread over draws says how noisy an estimate is at
that budget. Label-free rows are read from the committed `results.json`.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from onnxattr.analysis.distances import LabelledMatrix
from onnxattr.analysis.evaluation import Oracle, evaluate, read_oracle
from onnxattr.benchmark.scenes import TASKS, generate
from onnxattr.benchmark.world import committed_dir
from onnxattr.transfer import estimates as E
from onnxattr.transfer.sources import EncoderRunner

POOL_SEED = 9
SIZES = (50, 200, 1000)
ORACLES = ("oracle_full", "oracle")


def pool_features(pool, manifest: list[dict], src: Path, log) -> dict[tuple[str, str], np.ndarray]:
    """Every encoder's outputs on the pool, per input kind (clean, noisy, gray) a task uses."""
    kinds = sorted({t.input for t in TASKS.values()})
    inputs = {k: pool.inputs(next(n for n, t in TASKS.items() if t.input == k)) for k in kinds}
    out = {}
    for e in manifest:
        t0 = time.perf_counter()
        runner = EncoderRunner.from_file(src / e["file"], e["encoder_node"], e["preprocessing"])
        for k, imgs in inputs.items():
            out[(e["name"], k)] = runner.run(imgs, 128)
        log(f"features {e['name']} ({time.perf_counter() - t0:.1f} s)")
    return out


def score_draw(
    feats: dict, pool, models: list[str], idx: np.ndarray, max_samples: int, seed: int
) -> dict[str, dict[str, dict[str, float]]]:
    """scores[estimate][target][source] for one label draw; the mixture posterior of N-LEEP is
    fitted once per (target, source) and shared by leep and nce."""
    out: dict[str, dict[str, dict[str, float]]] = {e: {} for e in E.ESTIMATES}
    for task, spec in TASKS.items():
        y = pool.targets[task][idx]
        for m in models:
            x, lab = E.samples(feats[(m, spec.input)][idx], y, True, max_samples, seed)
            ids = lab if spec.kind == "dense_cls" else E.quantise(lab, E.BINS, seed)
            ids, k = np.unique(ids, return_inverse=True)[1], len(np.unique(ids))
            theta = E.source_posterior(x, k, seed)
            vals = {
                "logme": E.logme(x, lab),
                "hscore": E.hscore(x, ids),
                "leep": E.leep_from(theta, ids),
                "nce": E.nce_from(theta.argmax(1), ids),
                "sfda": E.sfda(x, ids),
            }
            for e, v in vals.items():
                out[e].setdefault(task, {})[m] = v
    return out


def as_matrix(scores: dict[str, dict[str, float]], models: list[str], name: str) -> LabelledMatrix:
    """targets' rows filled with their scores (higher = better); rows of non-targets unused."""
    vals = np.zeros((len(models), len(models)))
    pos = {m: i for i, m in enumerate(models)}
    for t, row in scores.items():
        for s, v in row.items():
            vals[pos[t], pos[s]] = v
    return LabelledMatrix(models, vals, "affinity", name)


def figures(mat: LabelledMatrix, orc: Oracle) -> dict:
    ev = evaluate(mat, orc, top=5)
    per = {}
    for i, t in enumerate(orc.targets):
        e = evaluate(mat, Oracle([t], orc.sources, orc.values[i : i + 1]), top=5)
        per[t] = {f"P@{k}": e.precision[k - 1] for k in (1, 3, 5)} | {"spearman": e.spearman}
    return {f"P@{k}": ev.precision[k - 1] for k in (1, 3, 5)} | {
        "spearman": ev.spearman,
        "per_target": per,
    }


def _stats(values: list[float]) -> dict[str, float]:
    v = np.array([x for x in values if math.isfinite(x)])
    return {
        "mean": float(v.mean()),
        "sd": float(v.std(ddof=1)) if len(v) > 1 else math.nan,
        "min": float(v.min()),
        "max": float(v.max()),
    }


def summarise(runs: list[dict], oracles: dict[str, Oracle]) -> dict:
    """Mean, sd, min and max over label draws, overall and per target."""
    out: dict = {}
    for key, orc in oracles.items():
        for est in E.ESTIMATES:
            for n in sorted({r["n"] for r in runs}):
                rs = [r["figures"][key][est] for r in runs if r["n"] == n]
                cell = {m: _stats([r[m] for r in rs]) for m in ("P@1", "P@3", "P@5", "spearman")}
                cell["per_target"] = {
                    t: {
                        m: float(np.nanmean([r["per_target"][t][m] for r in rs]))
                        for m in ("P@1", "P@3", "P@5", "spearman")
                    }
                    for t in orc.targets
                }
                out.setdefault(key, {}).setdefault(est, {})[str(n)] = cell
    return out


def markdown(summary: dict, label_free: dict, seeds: int, pool: int) -> str:
    parts = []
    for key in ORACLES:
        lines = [
            f"### Against `{key}.csv`",
            "",
            f"Mean ± sd over {seeds} label draws (pool of {pool} scenes); label-free rows: "
            "the committed `results.json` (no labels, one value).",
            "",
            "| estimator | labelled images | P@1 | P@3 | P@5 | Spearman |",
            "|---|---|---|---|---|---|",
        ]
        for est, by_n in summary[key].items():
            for n, c in by_n.items():
                cells = [
                    f"{c[m]['mean']:.3f} ± {c[m]['sd']:.3f}"
                    for m in ("P@1", "P@3", "P@5", "spearman")
                ]
                lines.append(f"| {est} | {n} | " + " | ".join(cells) + " |")
        for row in label_free.get(key, []):
            lines.append(
                f"| {row['estimator']} | 0 | {row['P@1']:.3f} | {row['P@3']:.3f} | "
                f"{row['P@5']:.3f} | {row['spearman']:.3f} |"
            )
        parts.append("\n".join(lines))
    # per target, the middle budget (200 labels by default): P@3 and Spearman of every estimate
    key = "oracle_full"
    budgets = sorted(next(iter(summary[key].values())), key=int)
    n = budgets[len(budgets) // 2]
    ests = list(summary[key])
    lines = [
        f"### Per target, {n} labelled images, against `{key}.csv` (P@3 / Spearman, mean over draws)",
        "",
        "| target | " + " | ".join(ests) + " |",
        "|---|" + "---|" * len(ests),
    ]
    for t in summary[key][ests[0]][n]["per_target"]:
        cells = [
            "{P@3:.2f} / {spearman:.2f}".format(**summary[key][e][n]["per_target"][t]) for e in ests
        ]
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/label_efficiency"))
    ap.add_argument("--seeds", type=int, default=5, help="label draws per budget")
    ap.add_argument("--pool", type=int, default=2000, help="scenes the labels are drawn from")
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    ap.add_argument("--max-samples", type=int, default=E.MAX_SAMPLES)
    ap.add_argument("--world", type=int, default=0, help="a committed world (0-3)")
    args = ap.parse_args(argv)
    if max(args.sizes) > args.pool:
        ap.error(f"--pool {args.pool} is smaller than the largest budget {max(args.sizes)}")
    src = committed_dir(args.world)
    pool_seed = POOL_SEED + 100 * args.world
    manifest = json.loads((src / "manifest.json").read_text())["models"]
    models = [e["name"] for e in manifest]
    oracles = {k: read_oracle(src / f"{k}.csv") for k in ORACLES}
    t_all = time.perf_counter()
    pool = generate(args.pool, pool_seed)
    feats = pool_features(pool, manifest, src, print)
    runs = []
    for n in args.sizes:
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            idx = np.sort(np.random.default_rng([n, seed]).choice(args.pool, n, replace=False))
            scores = score_draw(feats, pool, models, idx, args.max_samples, seed)
            figs = {
                key: {e: figures(as_matrix(scores[e], models, e), orc) for e in E.ESTIMATES}
                for key, orc in oracles.items()
            }
            runs.append({"n": n, "seed": seed, "figures": figs, "scores": scores})
            p3 = {e: round(figs["oracle_full"][e]["P@3"], 3) for e in E.ESTIMATES}
            print(f"n={n} draw {seed}: P@3 (oracle_full) {p3} ({time.perf_counter() - t0:.0f} s)")
    summary = summarise(runs, oracles)
    committed = json.loads((src / "results.json").read_text())["estimators"]
    label_free = {k: [r for r in committed[k] if r["estimator"] != "oracle"] for k in ORACLES}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    settings = {
        "pool": args.pool,
        "world": args.world,
        "pool_seed": pool_seed,
        "sizes": args.sizes,
        "seeds": args.seeds,
        "max_samples": args.max_samples,
        "bins": E.BINS,
        "seconds": round(time.perf_counter() - t_all, 1),
    }
    args.out.with_suffix(".json").write_text(
        json.dumps(
            {
                "settings": settings,
                "summary": summary,
                "draws": [  # overall figures per draw; per target: the summary
                    {
                        "n": r["n"],
                        "seed": r["seed"],
                        "figures": {
                            key: {
                                e: {m: v for m, v in f.items() if m != "per_target"}
                                for e, f in by_e.items()
                            }
                            for key, by_e in r["figures"].items()
                        },
                    }
                    for r in runs
                ],
            },
            indent=1,
        )
    )
    args.out.with_suffix(".md").write_text(markdown(summary, label_free, args.seeds, args.pool))
    print(f"wrote {args.out.with_suffix('.json')} and .md ({settings['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
