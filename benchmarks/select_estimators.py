"""Choose the default estimator on a measured oracle, and report every variant on held-out targets.

    python benchmarks/select_estimators.py --space bench/space.h5 --oracle bench/oracle_full.csv \\
        --out bench/selection
    python benchmarks/select_estimators.py --synthetic --out /tmp/sel   # planted-structure dry run

The candidate list below is fixed in this file before any score is looked at; nothing in it is
tuned to the benchmark. Protocol:

1. every candidate's matrix is computed once (cached in the space);
2. a fixed candidate has no parameter fitted on the oracle, so its mean over all targets is a
   held-out figure;
3. what *is* chosen with the oracle — the best attribution variant, the best representation
   estimator and the weight of their combination — is chosen leave-one-target-out: on all targets
   but one, then scored on the one left out; the procedure's P@K is the mean of those scores;
4. the default shipped is the same procedure run on all targets (its in-sample score is shown for
   reference only);
5. probe-bootstrap 95% intervals for the paper's comparisons, the baselines and the default;
6. the twin check: for each model that has a same-task model of another framework, architecture,
   input size or seed, is a same-task model its nearest neighbour?

Writes ``selection.md`` (the table for docs/benchmark.md), ``selection.json``. Not part of the tests.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import h5py
import numpy as np

from onnxattr.analysis.distances import LabelledMatrix, space_models
from onnxattr.analysis.estimators import available_estimators, compute_affinity
from onnxattr.analysis.evaluation import evaluate, read_oracle
from onnxattr.analysis.selection import (
    KS,
    best_of,
    fit_weight,
    leave_one_target_out,
    target_scores,
    twin_check,
)
from onnxattr.analysis.stability import evaluation_ci, ranking_stability

# ----------------------------------------------------------------------------- fixed candidates
# Map comparisons (onnxattr.analysis.map_compare): the paper's, magnitude, per-image centring and
# ranks, common grids of 16 and 8 cells (4 and 8 probe pixels at 64 px), smoothing by 2 pixels of
# each model's own input, and their combinations.
COMPARISONS = (
    "",
    "+abs",
    "+centre",
    "+rank",
    "+g16",
    "+abs+g16",
    "+abs+g8",
    "+abs+s2",
    "+abs+s2+g16",
    "+s2+g16",
    "+abs+g16+rank",
    "+abs+s2+g8+rank",
)
CORRECTIONS = ("", "+hub", "+csls3")
FEATURES = ("svcca", "cka", "rsa", "relation")
FEATURE_CORRECTIONS = ("", "+hub")
WEIGHTS = tuple(np.round(np.linspace(0, 1, 11), 2))
BY = "P@3"


def log(msg: str) -> None:
    print(msg, flush=True)


# ----------------------------------------------------------------------------- synthetic space
def synthetic(out: Path, seed: int = 0) -> tuple[Path, Path]:
    """A space + oracle with planted structure, shaped like the mini-Taskonomy benchmark: 4 task
    families x 3 tasks, twins in another framework (other high-frequency artefacts and signs),
    another input size (blurred maps) and seed. Only for running this script before the measured
    oracle exists; its numbers mean nothing."""
    from scipy.ndimage import gaussian_filter

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.space_factory import add_model, create_space

    rng = np.random.default_rng(seed)
    n, s = 40, 32
    space = create_space(out / "synthetic.h5", n, s)
    fams = {f"f{f}": [f"f{f}t{t}" for t in range(3)] for f in range(4)}
    smooth = lambda a, sig: gaussian_filter(a, (0, sig, sig))  # noqa: E731
    hub = 4 * smooth(rng.normal(size=(n, s, s)), 3)
    fam_map = {f: smooth(rng.normal(size=(n, s, s)), 2.5) for f in fams}
    fam_feat = {f: rng.normal(size=(n, 8)) for f in fams}
    task_of, models = {}, []
    for f, tasks in fams.items():
        for t in tasks:
            tmap = fam_map[f] + 0.8 * smooth(rng.normal(size=(n, s, s)), 2.5)
            tfeat = fam_feat[f] + 0.8 * rng.normal(size=(n, 8))
            variants = [(t, "torch", 0)]
            if t.endswith("t0"):
                variants += [(f"{t}.keras", "keras", 0), (f"{t}.in16", "torch", 1)]
            for name, fw, blur in variants:
                m = np.abs(tmap + hub) * (1 + 0.3 * rng.normal(size=(n, s, s)))
                m = smooth(m, 2.0) if blur else m
                sign = np.sign(rng.normal(size=(n, s, s)))  # signed maps: high-frequency signs
                feat = np.tanh(tfeat @ rng.normal(size=(8, 16))) + 0.3 * rng.normal(size=(n, 16))
                add_model(space, name, {"grad_input": m * sign, "saliency": m}, feat)
                with h5py.File(space, "a") as h:
                    h[f"models/{name}"].attrs.update(
                        task=t,
                        framework=fw,
                        preprocessing=json.dumps({"input_size": [16, 16] if blur else [32, 32]}),
                    )
                task_of[name] = t
                models.append(name)
    targets = [t for ts in fams.values() for t in ts]
    fam = {t: f for f, ts in fams.items() for t in ts}
    vals = np.array(
        [
            [
                (1.0 if task_of[m] == t else 0.6 if fam[task_of[m]] == fam[t] else 0.1)
                + 0.05 * rng.normal()
                for m in models
            ]
            for t in targets
        ]
    )
    oracle = out / "synthetic_oracle.csv"
    lines = [",".join(["target", *models])]
    lines += [",".join([t, *map(repr, row.tolist())]) for t, row in zip(targets, vals)]
    oracle.write_text("\n".join(lines) + "\n")
    return space, oracle


# ----------------------------------------------------------------------------- helpers
def model_info(space: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(model -> task, model -> twin kind) from the space's recorded metadata; the kind of a
    model whose name is not its task: its framework, input size or seed differs from the
    primary model of that task."""
    tasks, kinds, attrs = {}, {}, {}
    with h5py.File(space, "r") as f:
        for m in space_models(f):
            a = {
                k: (v.decode() if isinstance(v, bytes) else v)
                for k, v in f["models"][m].attrs.items()
            }
            attrs[m] = a
            if a.get("task"):
                tasks[m] = str(a["task"])
    for m, t in tasks.items():
        if m == t or t not in attrs:
            continue
        a, p = attrs[m], attrs[t]
        size = lambda x: json.loads(x.get("preprocessing", "{}")).get("input_size")  # noqa: E731
        if a.get("framework") != p.get("framework"):
            kinds[m] = "framework"
        elif size(a) != size(p) or ".plain" in m:
            kinds[m] = "architecture/input"
        else:
            kinds[m] = "seed"
    return tasks, kinds


def fmt(v: float) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--space", type=Path)
    ap.add_argument("--oracle", type=Path, help="targets x sources CSV (higher = better)")
    ap.add_argument(
        "--also-oracle",
        type=Path,
        action="append",
        default=[],
        help="further oracle(s) to report the same estimators against",
    )
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--bootstrap", type=int, default=30)
    ap.add_argument("--synthetic", action="store_true")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    if args.synthetic:
        args.space, args.oracle = synthetic(args.out)
    if args.space is None or args.oracle is None:
        ap.error("give --space and --oracle (or --synthetic)")
    oracle = read_oracle(args.oracle)
    names = [n for n in oracle.names]
    with h5py.File(args.space, "r") as f:
        in_space = set(space_models(f))
    names = sorted(set(names) | in_space) if set(names) <= in_space else names
    avail = available_estimators(args.space)
    methods = [m for m in avail if m not in FEATURES and not m.startswith("depara")]
    attr_names = [m + c + k for m in methods for c in COMPARISONS for k in CORRECTIONS]
    feat_names = [m + k for m in FEATURES for k in FEATURE_CORRECTIONS]
    other = ["depara"]

    mats: dict[str, LabelledMatrix] = {}
    secs: dict[str, float] = {}
    for name in [*attr_names, *feat_names, *other]:
        t0 = time.perf_counter()
        mats[name] = compute_affinity(args.space, name, names)[0]
        secs[name] = time.perf_counter() - t0
    log(f"{len(mats)} matrices over {len(names)} models ({time.perf_counter() - t_start:.0f} s)")
    scores = {n: target_scores(m, oracle, args.top) for n, m in mats.items()}
    attr_scores = {n: scores[n] for n in attr_names}
    feat_scores = {n: scores[n] for n in feat_names}

    def choose(idx: list[int]) -> LabelledMatrix:
        a, f = best_of(attr_scores, idx, BY), best_of(feat_scores, idx, BY)
        w, m = fit_weight(mats[a], mats[f], oracle, idx, WEIGHTS, BY, args.top)
        return m

    def choose_attr(idx: list[int]) -> LabelledMatrix:
        return mats[best_of(attr_scores, idx, BY)]

    loto_comb = leave_one_target_out(oracle, choose, args.top)
    loto_attr = leave_one_target_out(oracle, choose_attr, args.top)
    all_idx = list(range(len(oracle.targets)))
    default = choose(all_idx)
    default_name = default.estimator
    log(f"default (chosen on all targets): {default_name}")

    tasks, kinds = model_info(args.space)
    rows = []

    def add_row(label: str, sc: dict[str, float], kind: str, mat: LabelledMatrix | None) -> None:
        tw = twin_check(mat, tasks, kinds) if mat is not None and kinds else {}
        rows.append(
            {
                "estimator": label,
                "kind": kind,
                **sc,
                "twin_first": tw.get("all"),
                "twins": tw,
                "seconds": secs.get(label),
            }
        )

    paper = [m for m in methods]
    for n in paper:
        add_row(n, scores[n].mean(), "paper's comparison", mats[n])
    for n in FEATURES + ("depara",):
        add_row(n, scores[n].mean(), "baseline", mats[n])
    add_row("LOTO: best attribution variant", loto_attr.mean(), "selection, held-out", None)
    add_row(
        "LOTO: combined (variant + representation, fitted weight)",
        loto_comb.mean(),
        "selection, held-out",
        None,
    )
    dsc = target_scores(default, oracle, args.top).mean()
    add_row(f"default = {default_name}", dsc, "in-sample (reference only)", default)
    for n in attr_names:
        if n not in paper:
            add_row(n, scores[n].mean(), "variant", mats[n])
    for n in feat_names:
        if n not in FEATURES:
            add_row(n, scores[n].mean(), "baseline variant", mats[n])
    ev = evaluate(mats[paper[0]], oracle, args.top)
    rows.append(
        {
            "estimator": "random (expected)",
            "kind": "reference",
            **{f"P@{k}": ev.random_precision[k - 1] for k in KS},
            "spearman": 0.0,
        }
    )

    # probe-bootstrap intervals: the paper's comparisons, the baselines, the default
    cis = {}
    if args.bootstrap > 1:
        for n in [*paper, *FEATURES, "depara", default_name]:
            stab = ranking_stability(args.space, n, names, n_boot=args.bootstrap)
            ci = evaluation_ci(stab, oracle, args.top)
            cis[n] = {**ci.to_dict(), "halves_spearman": stab.agreement, "note": stab.note()}
    extra = {}
    for path in args.also_oracle:
        o2 = read_oracle(path)
        extra[path.name] = {
            n: target_scores(m, o2, args.top).mean()
            for n, m in [*mats.items(), (default_name, default)]
        }

    result = {
        "space": str(args.space),
        "oracle": str(args.oracle),
        "models": names,
        "targets": oracle.targets,
        "by": BY,
        "default": default_name,
        "loto_chosen": loto_comb.chosen,
        "loto_attr_chosen": loto_attr.chosen,
        "rows": rows,
        "probe_bootstrap": cis,
        "also": extra,
        "seconds": time.perf_counter() - t_start,
    }
    (args.out / "selection.json").write_text(json.dumps(result, indent=1, default=str))
    (args.out / "selection.md").write_text(markdown(result))
    log(markdown(result))
    return 0


def _ci(p: dict, k: str) -> str:
    return f"{p[k][0]:.2f}–{p[k][1]:.2f}" if k in p else "–"


def markdown(r: dict) -> str:
    lines = [
        f"Oracle `{Path(r['oracle']).name}`: {len(r['targets'])} targets, "
        f"{len(r['models'])} models; relevant = oracle top-5; selection by {r['by']}, "
        "leave-one-target-out.",
        "",
        "| estimator | kind | P@1 | P@3 | P@5 | Spearman | twin first |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        tw = row.get("twin_first")
        tws = f"{tw[0]}/{tw[1]}" if tw else "–"
        lines.append(
            f"| {row['estimator']} | {row['kind']} | {fmt(row['P@1'])} | "
            f"{fmt(row['P@3'])} | {fmt(row['P@5'])} | {fmt(row['spearman'])} | {tws} |"
        )
    if r["probe_bootstrap"]:
        lines += [
            "",
            "Probe-bootstrap 95% intervals (same targets, resampled probe images):",
            "",
            "| estimator | P@1 | P@3 | P@5 | Spearman | halves ρ |",
            "|---|---|---|---|---|---|",
        ]
        for n, c in r["probe_bootstrap"].items():
            p = c["precision_ci"]
            lines.append(
                f"| {n} | {_ci(p, '1')} | {_ci(p, '3')} | {_ci(p, '5')} | "
                f"{c['spearman_ci'][0]:.2f}–{c['spearman_ci'][1]:.2f} | "
                f"{fmt(c['halves_spearman'])} |"
            )
    chosen = {}
    for v in r["loto_chosen"].values():
        chosen[v] = chosen.get(v, 0) + 1
    lines += [
        "",
        "Chosen in the leave-one-target-out folds: "
        + "; ".join(f"`{k}` ×{v}" for k, v in sorted(chosen.items(), key=lambda x: -x[1])),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
