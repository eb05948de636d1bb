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

    oracles = {args.oracle.name: oracle, **{p.name: read_oracle(p) for p in args.also_oracle}}
    tasks, kinds = model_info(args.space)
    twins = {n: twin_check(m, tasks, kinds) if kinds else {} for n, m in mats.items()}
    # procedures: chosen on the selection oracle's other targets, scored on the left-out one
    procs = {
        "LOTO: best attribution variant": choose_attr,
        "LOTO: attribution variant + representation, fitted weight": choose,
    }
    table: dict[str, dict[str, dict[str, float]]] = {}  # estimator -> oracle -> scores
    chosen: dict[str, dict[str, str]] = {}
    for label, fn in procs.items():
        for oname, orc in oracles.items():
            sel = leave_one_target_out(oracle, fn, args.top, score_on=orc)
            table.setdefault(label, {})[oname] = sel.mean()
            chosen[label] = sel.chosen
    for n, m in mats.items():
        for oname, orc in oracles.items():
            sc = scores[n] if orc is oracle else target_scores(m, orc, args.top)
            table.setdefault(n, {})[oname] = sc.mean()
    for oname, orc in oracles.items():
        ev = evaluate(mats[methods[0]], orc, args.top)
        table.setdefault("random (expected)", {})[oname] = {
            **{f"P@{k}": ev.random_precision[k - 1] for k in KS},
            "spearman": 0.0,
        }
    final = {label: fn(list(range(len(oracle.targets)))) for label, fn in procs.items()}
    defaults = {label: m.estimator for label, m in final.items()}
    twins.update({label: twin_check(m, tasks, kinds) for label, m in final.items() if kinds})
    log(f"chosen on all targets: {defaults}")

    # probe-bootstrap intervals: the paper's comparisons, the baselines, the chosen variants
    cis = {}
    if args.bootstrap > 1:
        for n in dict.fromkeys([*methods, *FEATURES, "depara", *defaults.values()]):
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
        "chosen_on_all_targets": defaults,
        "loto_chosen": chosen,
        "table": table,
        "twins": twins,
        "probe_bootstrap": cis,
        "seconds": time.perf_counter() - t_start,
        "matrix_seconds": secs,
    }
    (args.out / "selection.json").write_text(json.dumps(result, indent=1, default=str))
    (args.out / "selection.md").write_text(markdown(result))
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


def markdown(r: dict) -> str:
    heads = " | ".join(f"{o} P@1 | P@3 | P@5 | ρ" for o in r["oracles"])
    sep = "|---|---|" + "---|" * (4 * len(r["oracles"]) + 1)
    head = [f"| estimator | kind | {heads} | twin first |", sep]
    lines = [
        f"Selection oracle `{r['oracles'][0]}`; {len(r['targets'])} targets, "
        f"{len(r['models'])} models in the space; relevant = oracle top-5; variants chosen by "
        f"mean {r['by']} over the other targets (leave one target out). Every row is on held-out "
        "targets: fixed estimators have nothing fitted; the LOTO rows choose on 11 targets and "
        "score the 12th. Twin first: models of another framework, architecture/input size or "
        "seed whose nearest neighbour is a model of the same task.",
        "",
        *head,
    ]
    for n in r["methods"]:
        lines.append(_row(r, n, "paper's comparison"))
    for n in [*r["features"], "depara"]:
        lines.append(_row(r, n, "baseline"))
    for n in [k for k in r["table"] if k.startswith("LOTO")]:
        lines.append(_row(r, n, "selection procedure"))
    lines.append(_row(r, "random (expected)", "reference"))
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
            f"{label}, choices in the 12 folds: "
            + "; ".join(f"`{k}` ×{v}" for k, v in sorted(counts.items(), key=lambda x: -x[1]))
        )
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
            lines.append(
                _row(
                    r, n, "feature" if n.split("+")[0] in r["features"] or n == "depara" else "maps"
                )
            )
    lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
