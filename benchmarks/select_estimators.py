"""Choose the default estimator on a measured oracle, and report every variant on held-out targets.

    python benchmarks/select_estimators.py --space bench/space.h5 --oracle bench/oracle_full.csv \\
        --out bench/selection
    python benchmarks/select_estimators.py --synthetic --out /tmp/sel   # planted-structure dry run
    python benchmarks/select_estimators.py --regenerate --out benchmarks/selection  # tables only

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
7. (added with the directed estimators, before they were scored) the directed estimators
   ``predict`` and ``rankme`` as fixed candidates, three more procedures (the best attribution
   variant + predict; + rankme; procedure (b) with predict and rankme in its representation
   pool), per-target weighted Kendall tau and nDCG@top beside P@K and Spearman, 95% intervals from
   resampling the targets for every row, and the shipped default scored as a fixed estimator
   (in-sample: it was chosen on these targets).

Writes ``selection.md`` (the table for docs/estimators.md), ``selection.json`` (every per-target
score) and ``selection.csv`` (estimator, oracle, metric, mean, interval). Not part of the tests.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from onnxattr.analysis.distances import LabelledMatrix
from onnxattr.analysis.estimators import available_estimators, compute_affinity
from onnxattr.analysis.evaluation import Oracle, evaluate, read_oracle, target_rankings
from onnxattr.analysis.selection import (
    DEFAULT_ESTIMATOR,
    KS,
    best_of,
    bootstrap_targets,
    fit_weight,
    leave_one_target_out,
    target_scores,
    twin_check,
)
from onnxattr.analysis.stability import evaluation_ci, ranking_stability
from onnxattr.space_reader import read_space

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
# row = target, column = source; no correction applies (coverage added with issue 17's worlds,
# before any of their scores existed; world 0's committed selection predates it)
DIRECTED = ("predict", "coverage", "rankme")
METRICS = ("P@1", "P@3", "P@5", "spearman", "wtau", "ndcg")
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
                add_model(space, name, {"grad_input": m * sign, "saliency": m}, feat, attrs={
                    "task": t, "framework": fw,
                    "preprocessing": json.dumps({"input_size": [16, 16] if blur else [32, 32]})})
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
    with read_space(space) as reader:
        for m in reader.names():
            a = reader.attrs(m)
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


def random_ndcg(orc: Oracle, matrix: LabelledMatrix, top: int) -> float:
    """Expected nDCG@top of a uniformly random ranking: every position's expected gain is the
    mean gain of the target's candidates (mean over targets)."""
    out = []
    for _, truth, _ in target_rankings(matrix, orc)[0]:
        gain = (truth - truth.min()) / np.ptp(truth)
        disc = 1.0 / np.log2(np.arange(2, min(top, len(gain)) + 2))
        out.append(gain.mean() * disc.sum() / (np.sort(gain)[::-1][: len(disc)] @ disc))
    return float(np.mean(out))


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
    ap.add_argument("--bootstrap", type=int, default=30, help="probe resamples")
    ap.add_argument("--target-bootstrap", type=int, default=2000, help="target resamples")
    ap.add_argument("--synthetic", action="store_true")
    ap.add_argument(
        "--regenerate",
        action="store_true",
        help="rewrite OUT/selection.md and .csv from OUT/selection.json (nothing computed)",
    )
    args = ap.parse_args(argv)
    if args.regenerate:
        result = json.loads((args.out / "selection.json").read_text())
        (args.out / "selection.md").write_text(markdown(result))
        (args.out / "selection.csv").write_text(csv_table(result))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    if args.synthetic:
        args.space, args.oracle = synthetic(args.out)
    if args.space is None or args.oracle is None:
        ap.error("give --space and --oracle (or --synthetic)")
    oracle = read_oracle(args.oracle)
    names = [n for n in oracle.names]
    with read_space(args.space) as reader:
        in_space = set(reader.names())
    names = sorted(set(names) | in_space) if set(names) <= in_space else names
    avail = available_estimators(args.space)
    methods = [m for m in avail if m not in FEATURES and not m.startswith("depara")]
    attr_names = [m + c + k for m in methods for c in COMPARISONS for k in CORRECTIONS]
    feat_names = [m + k for m in FEATURES for k in FEATURE_CORRECTIONS]
    other = ["depara", *DIRECTED, DEFAULT_ESTIMATOR]

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
    wide_scores = {**feat_scores, **{n: scores[n] for n in DIRECTED}}

    def with_best(pool: dict) -> Callable[[list[int]], LabelledMatrix]:
        """Best attribution variant + the best of ``pool``, weight fitted, all on ``idx``."""

        def choose(idx: list[int]) -> LabelledMatrix:
            a, f = best_of(attr_scores, idx, BY), best_of(pool, idx, BY)
            return fit_weight(mats[a], mats[f], oracle, idx, WEIGHTS, BY, args.top)[1]

        return choose

    def choose_attr(idx: list[int]) -> LabelledMatrix:
        return mats[best_of(attr_scores, idx, BY)]

    oracles = {args.oracle.name: oracle, **{p.name: read_oracle(p) for p in args.also_oracle}}
    tasks, kinds = model_info(args.space)
    twins = {n: twin_check(m, tasks, kinds) if kinds else {} for n, m in mats.items()}
    # procedures: chosen on the selection oracle's other targets, scored on the left-out one
    procs = {
        "LOTO: best attribution variant": choose_attr,
        "LOTO: attribution variant + representation, fitted weight": with_best(feat_scores),
        "LOTO: attribution variant + predict, fitted weight": with_best(
            {"predict": scores["predict"]}
        ),
        "LOTO: attribution variant + rankme, fitted weight": with_best(
            {"rankme": scores["rankme"]}
        ),
        "LOTO: attribution variant + representation or directed, fitted weight": with_best(
            wide_scores
        ),
    }
    table: dict[str, dict[str, dict[str, float]]] = {}  # estimator -> oracle -> scores
    per_target: dict[str, dict[str, dict[str, list[float]]]] = {}  # estimator -> oracle -> metric
    chosen: dict[str, dict[str, str]] = {}

    def record(name: str, oname: str, values: dict[str, np.ndarray]) -> None:
        per_target.setdefault(name, {})[oname] = {k: v.tolist() for k, v in values.items()}
        ci = bootstrap_targets(values, args.target_bootstrap)
        table.setdefault(name, {})[oname] = {
            **{
                k: float(np.nanmean(v)) if np.isfinite(v).any() else math.nan
                for k, v in values.items()
            },
            **{f"{k}_ci": ci[k] for k in values},
        }

    for label, fn in procs.items():
        for oname, orc in oracles.items():
            sel = leave_one_target_out(oracle, fn, args.top, score_on=orc)
            record(label, oname, sel.per_target())
            chosen[label] = sel.chosen
        log(f"{label}: {table[label][args.oracle.name]['P@3']:.3f}")
    for n, m in mats.items():
        for oname, orc in oracles.items():
            sc = scores[n] if orc is oracle else target_scores(m, orc, args.top)
            record(n, oname, sc.per_target())
    for oname, orc in oracles.items():
        ev = evaluate(mats[methods[0]], orc, args.top)
        table.setdefault("random (expected)", {})[oname] = {
            **{f"P@{k}": ev.random_precision[k - 1] for k in KS},
            "spearman": 0.0,
            "wtau": 0.0,
            "ndcg": random_ndcg(orc, mats[methods[0]], args.top),
        }
    final = {label: fn(list(range(len(oracle.targets)))) for label, fn in procs.items()}
    defaults = {label: m.estimator for label, m in final.items()}
    twins.update({label: twin_check(m, tasks, kinds) for label, m in final.items() if kinds})
    log(f"chosen on all targets: {defaults}")

    # probe-bootstrap intervals: the paper's comparisons, the baselines, the chosen variants
    cis = {}
    if args.bootstrap > 1:
        for n in dict.fromkeys([*methods, *FEATURES, "depara", *defaults.values()]):
            if any(d in n for d in DIRECTED):  # probe resampling supports symmetric terms only
                continue
            t0 = time.perf_counter()
            stab = ranking_stability(args.space, n, names, n_boot=args.bootstrap)
            cis[n] = {o: evaluation_ci(stab, orc, args.top).to_dict() for o, orc in oracles.items()}
            cis[n]["halves_spearman"] = stab.agreement
            cis[n]["note"] = stab.note()
            log(f"bootstrap {n} ({time.perf_counter() - t0:.0f} s)")
    result = {
        "space": str(args.space),
        "oracles": list(oracles),
        "models": names,
        "targets": oracle.targets,
        "by": BY,
        "methods": methods,
        "features": list(FEATURES),
        "directed": list(DIRECTED),
        "default": DEFAULT_ESTIMATOR,
        "chosen_on_all_targets": defaults,
        "loto_chosen": chosen,
        "table": table,
        "per_target": per_target,
        "twins": twins,
        "probe_bootstrap": cis,
        "seconds": time.perf_counter() - t_start,
        "matrix_seconds": secs,
    }
    (args.out / "selection.json").write_text(json.dumps(result, indent=1, default=str))
    (args.out / "selection.md").write_text(markdown(result))
    (args.out / "selection.csv").write_text(csv_table(result))
    log(markdown(result))
    return 0


def _ci(p: dict, k: str) -> str:
    return f"{p[k][0]:.2f}–{p[k][1]:.2f}" if k in p else "–"


def _row(r: dict, name: str, kind: str) -> str:
    cells = []
    for o in r["oracles"]:
        sc = r["table"][name][o]
        cells += [fmt(sc["P@1"]), fmt(sc["P@3"]), fmt(sc["P@5"]), fmt(sc["spearman"])]
    tw = r["twins"].get(name, {}).get("all")
    return f"| {name} | {kind} | " + " | ".join(cells) + f" | {f'{tw[0]}/{tw[1]}' if tw else '–'} |"


def _kind(r: dict, name: str) -> str:
    if name == r["default"]:
        return "shipped default (in-sample)"
    if name.startswith("LOTO"):
        return "selection procedure"
    if name.startswith("random"):
        return "reference"
    if name in r["directed"]:
        return "directed"
    return "paper's comparison" if name in r["methods"] else "baseline"


def _graded_row(r: dict, o: str, name: str) -> str:
    sc = r["table"][name][o]
    tw = r["twins"].get(name, {}).get("all")
    cells = " | ".join(fmt(sc.get(k, math.nan)) for k in METRICS)
    return f"| {name} | {_kind(r, name)} | {cells} | {f'{tw[0]}/{tw[1]}' if tw else '–'} |"


def _interval_row(r: dict, o: str, name: str) -> str:
    sc = r["table"][name][o]
    cells = " | ".join(
        f"{sc[k + '_ci'][0]:.2f}–{sc[k + '_ci'][1]:.2f}" if k + "_ci" in sc else "–"
        for k in METRICS
    )
    return f"| {name} | {cells} |"


def csv_table(r: dict) -> str:
    """One line per estimator, oracle and metric: mean over targets and its target-bootstrap
    95% interval (what the docs tables are made from)."""
    lines = ["estimator,oracle,metric,mean,ci_low,ci_high"]
    for name, by_oracle in r["table"].items():
        for o, sc in by_oracle.items():
            for k in METRICS:
                lo, hi = sc.get(k + "_ci", (math.nan, math.nan))
                lines.append(f'"{name}",{o},{k},{sc.get(k, math.nan)!r},{lo!r},{hi!r}')
    return "\n".join(lines) + "\n"


def markdown(r: dict) -> str:
    heads = " | ".join(f"{o} P@1 | P@3 | P@5 | ρ" for o in r["oracles"])
    sep = "|---|---|" + "---|" * (4 * len(r["oracles"]) + 1)
    head = [f"| estimator | kind | {heads} | twin first |", sep]
    main = [
        *r["methods"],
        *r["features"],
        "depara",
        *r["directed"],
        r["default"],
        *[k for k in r["table"] if k.startswith("LOTO")],
        "random (expected)",
    ]
    lines = [
        f"Selection oracle `{r['oracles'][0]}`; {len(r['targets'])} targets, "
        f"{len(r['models'])} models in the space; relevant = oracle top-5; variants chosen by "
        f"mean {r['by']} over the other targets (leave one target out). Every row but the "
        "shipped default's is on held-out targets: fixed estimators have nothing fitted; the LOTO "
        "rows choose on 11 targets and score the 12th. The shipped default was chosen on these "
        "same targets (in-sample). wτ: weighted Kendall τ; nDCG@5: graded relevance (measured "
        "transfer, min-max scaled per target). Twin first: models of another framework, "
        "architecture/input size or seed whose nearest neighbour is a model of the same task.",
    ]
    for o in r["oracles"]:
        lines += [
            "",
            f"Against `{o}`:",
            "",
            "| estimator | kind | P@1 | P@3 | P@5 | ρ | wτ | nDCG@5 | twin first |",
            "|---|---|---|---|---|---|---|---|---|",
            *[_graded_row(r, o, n) for n in main],
        ]
    lines += [
        "",
        "Chosen on all targets (what a user gets): "
        + "; ".join(f"{k}: `{v}`" for k, v in r["chosen_on_all_targets"].items()),
        "",
    ]
    for label, ch in r["loto_chosen"].items():
        counts: dict[str, int] = {}
        for v in ch.values():
            counts[v] = counts.get(v, 0) + 1
        lines.append(
            f"{label}, choices in the {len(ch)} folds: "
            + "; ".join(f"`{k}` ×{v}" for k, v in sorted(counts.items(), key=lambda x: -x[1]))
        )
    for o in r["oracles"]:
        lines += [
            "",
            f"Target-bootstrap 95% intervals against `{o}` (the targets resampled with "
            "replacement; how much each mean depends on which 12 targets the benchmark has):",
            "",
            "| estimator | P@1 | P@3 | P@5 | ρ | wτ | nDCG@5 |",
            "|---|---|---|---|---|---|---|",
            *[_interval_row(r, o, n) for n in main if n != "random (expected)"],
        ]
    if r["probe_bootstrap"]:
        o = r["oracles"]
        lines += [
            "",
            "Probe-bootstrap 95% intervals (same targets, probe images resampled):",
            "",
            "| estimator | " + " | ".join(f"{x} P@1 | P@3 | ρ" for x in o) + " | halves ρ |",
            "|---|" + "---|" * (3 * len(o) + 1),
        ]
        for n, c in r["probe_bootstrap"].items():
            cells = []
            for x in o:
                p = c[x]["precision_ci"]
                cells += [
                    _ci(p, "1"),
                    _ci(p, "3"),
                    f"{c[x]['spearman_ci'][0]:.2f}–{c[x]['spearman_ci'][1]:.2f}",
                ]
            lines.append(f"| {n} | " + " | ".join(cells) + f" | {fmt(c['halves_spearman'])} |")
    lines += ["", "<details><summary>Every candidate</summary>", "", *head]
    for n in r["table"]:
        if not n.startswith("LOTO") and n != "random (expected)":
            kind = "feature" if n.split("+")[0] in r["features"] or n == "depara" else "maps"
            lines.append(_row(r, n, kind if _kind(r, n) == "baseline" else _kind(r, n)))
    lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
