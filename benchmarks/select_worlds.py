"""Choose the default estimator on some mini-Taskonomy worlds, report it on a world nothing was
chosen on (issue 17).

    onnxattr bench taskonomy-mini --committed --world N --out bench/wN      # N = 1, 2, 3
    python benchmarks/select_worlds.py --world 1=bench/w1 --world 2=bench/w2 --world 3=bench/w3 \\
        --choose 1 2 --report 3 --out benchmarks/worlds
    python benchmarks/select_worlds.py --regenerate --out benchmarks/worlds   # tables only

Fixed before any world-1-3 score was computed: the candidates (``select_estimators.py``'s list:
every attribution variant, representation similarities, DEPARA, the directed ``predict``,
``coverage`` and ``rankme``, the shipped default), the selection oracle (``oracle_full.csv``, the heterogeneous
one: every encoder of the world as a source), the criterion (mean P@3 over the pooled targets of
the choice worlds; ties: Spearman) and the three procedures:

- **best single estimator** — the best of every fixed candidate;
- **attribution + representation/directed** — the best attribution variant plus the best
  representation or directed estimator, the weight of ``combine:`` fitted on the choice worlds;
- **attribution + source quality** — the best attribution variant plus the better source-quality
  term (``rankme`` or ``coverage``, a target-independent column), weight fitted.

The procedure whose choice scores best on the choice worlds is the new default candidate. Every
row is then scored per world and pooled, with target-bootstrap 95% intervals; the report world's
figures are the held-out ones. Twin first: for each model with a same-task model of another
framework, architecture/input size or seed, is a same-task model its nearest neighbour?
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import select_estimators as S  # noqa: E402  (the fixed candidate list and its helpers)

from onnxattr.analysis.distances import LabelledMatrix  # noqa: E402
from onnxattr.analysis.estimators import (  # noqa: E402
    available_estimators,
    combine_matrices,
    compute_affinity,
)
from onnxattr.analysis.evaluation import evaluate, read_oracle  # noqa: E402
from onnxattr.analysis.selection import (  # noqa: E402
    DEFAULT_ESTIMATOR,
    KS,
    bootstrap_targets,
    target_scores,
    twin_check,
)
from onnxattr.space_reader import read_space  # noqa: E402

ORACLES = ("oracle_full", "oracle")  # selection oracle first
PROCEDURES = (
    "best single estimator",
    "attribution + representation/directed",
    "attribution + source quality",
)


class World:
    """One world's space, oracles, candidate matrices and per-target scores."""

    def __init__(self, number: int, folder: Path, top: int) -> None:
        self.number, self.folder, self.top = number, folder, top
        self.space = folder / "space.h5"
        self.oracles = {o: read_oracle(folder / f"{o}.csv") for o in ORACLES}
        with read_space(self.space) as reader:
            self.names = sorted(reader.names())
        self.tasks, self.kinds = S.model_info(self.space)
        self.mats: dict[str, LabelledMatrix] = {}
        self.scores: dict[str, dict[str, dict[str, np.ndarray]]] = {}  # est -> oracle -> metric

    def add(self, name: str, matrix: LabelledMatrix | None = None) -> None:
        if name in self.mats:
            return
        m = matrix if matrix is not None else compute_affinity(self.space, name, self.names)[0]
        self.mats[name] = m
        self.scores[name] = {
            o: target_scores(m, orc, self.top).per_target() for o, orc in self.oracles.items()
        }

    def random(self, oracle: str) -> dict[str, float]:
        orc, m = self.oracles[oracle], next(iter(self.mats.values()))
        ev = evaluate(m, orc, self.top)
        return {
            **{f"P@{k}": float(ev.random_precision[min(k, len(ev.k)) - 1]) for k in KS},
            "spearman": 0.0,
            "wtau": 0.0,
            "ndcg": S.random_ndcg(orc, m, self.top),
        }


class Zoo:
    """The real zoo's space (`onnxattr demo --full`): with `--zoo`, a candidate may be chosen only
    if its nearest neighbour is of the same task family for at least `factor` × chance of the zoo's
    models (`zoo_families.py`); the worlds' models share one preprocessing and are small, so an
    estimator can win there and fail on real models (docs/estimators.md)."""

    def __init__(self, space: Path, factor: float) -> None:
        import zoo_families as Z

        self.space, self.factor = space, factor
        self.family = {m: f for f, ms in Z.FAMILIES.items() for m in ms}
        with read_space(space) as reader:
            self.names = sorted(reader.names())
        counted, chance = Z.chance_of(self.names, self.family)
        self.needed = factor * chance * len(counted)
        self.mats: dict[str, LabelledMatrix] = {}
        self.nearest: dict[str, tuple[int, int]] = {}

    def add(self, name: str, matrix: LabelledMatrix | None = None) -> None:
        if name not in self.mats:
            m = matrix if matrix is not None else compute_affinity(self.space, name, self.names)[0]
            self.mats[name] = m
            self.nearest[name] = twin_check(m, self.family)["all"]

    def admissible(self, name: str) -> bool:
        self.add(name)
        return self.nearest[name][0] >= self.needed


#: Earlier defaults and choices, reported beside the candidates (`--also`).
EARLIER = {
    "combine:saliency=0.6,svcca+hub=0.4": "previous default (chosen on world 0)",
    "combine:elrp+g16+csls3=0.3,svcca+hub=0.7": "chosen on worlds 1+2 without the zoo check",
}

ZOO: list[Zoo] = []  # the zoo, when `--zoo` is given


def pooled(worlds: list[World], name: str, oracle: str) -> dict[str, np.ndarray]:
    """Per-target values of every world, end to end (a target of each world counts once)."""
    return {
        k: np.concatenate([w.scores[name][oracle][k] for w in worlds])
        for k in worlds[0].scores[name][oracle]
    }


def mean_key(worlds: list[World], name: str) -> tuple[float, float]:
    v = pooled(worlds, name, ORACLES[0])
    p, rho = np.nanmean(v[S.BY]), np.nanmean(v["spearman"])
    return float(p), float(rho) if math.isfinite(rho) else -1.0


def best(worlds: list[World], names: list[str], zoo: bool = False) -> str | None:
    """Highest pooled mean P@3 on the selection oracle (ties: Spearman, then list order); with
    `zoo` (and `--zoo` given), among the names the zoo admits only (None if none)."""
    names = [n for n in names if not (zoo and ZOO) or ZOO[0].admissible(n)]
    if not names:
        return None
    return max(names, key=lambda n: (mean_key(worlds, n), -names.index(n)))


def combined(worlds: list[World], a: str | None, b: str | None) -> str | None:
    """``combine:a=w,b=1-w`` with w fitted on ``worlds`` (pooled) among the weights whose
    combination the zoo admits (with `--zoo`); adds it to every world. None: no such weight."""
    if a is None or b is None:
        return None
    labels = []
    for w in S.WEIGHTS:
        label = ""
        for world in ALL:
            m = combine_matrices([world.mats[a], world.mats[b]], [float(w), float(1 - w)])
            world.add(m.estimator, m)
            label = m.estimator
        if ZOO:
            ZOO[0].add(a)
            ZOO[0].add(b)
            ZOO[0].add(label, combine_matrices([ZOO[0].mats[a], ZOO[0].mats[b]],
                                               [float(w), float(1 - w)]))
        labels.append(label)
    return best(worlds, labels, zoo=True)


ALL: list[World] = []  # every world; combinations fitted on some are scored on all


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", action="append", default=[], metavar="N=FOLDER",
                    help="a world's `onnxattr bench taskonomy-mini` output folder")
    ap.add_argument("--choose", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--report", type=int, nargs="+", default=[3])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--target-bootstrap", type=int, default=2000)
    ap.add_argument("--zoo", type=Path, help="the zoo's space (`onnxattr demo --full`): choose "
                    "only estimators that find same-family neighbours there (see Zoo)")
    ap.add_argument("--also", nargs="*", default=list(EARLIER), metavar="EST",
                    help="estimators to report beside the candidates (default: the earlier "
                    "defaults and choices)")
    ap.add_argument("--zoo-factor", type=float, default=2.0,
                    help="how many times chance the zoo check asks for (default 2)")
    ap.add_argument("--regenerate", action="store_true",
                    help="rewrite OUT/worlds.md and .csv from OUT/worlds.json (nothing computed)")
    args = ap.parse_args(argv)
    if args.regenerate:
        result = json.loads((args.out / "worlds.json").read_text())
        (args.out / "worlds.md").write_text(markdown(result))
        (args.out / "worlds.csv").write_text(csv_table(result))
        return 0
    folders = {int(n): Path(f) for n, f in (w.split("=", 1) for w in args.world)}
    if set(args.choose) & set(args.report) or not set(args.choose) | set(args.report) <= set(
        folders
    ):
        ap.error("--choose and --report name disjoint worlds, each given by --world N=FOLDER")
    t0 = time.perf_counter()
    if args.zoo:
        ZOO.append(Zoo(args.zoo, args.zoo_factor))
    ALL.extend(World(n, folders[n], args.top) for n in sorted(folders))
    by_number = {w.number: w for w in ALL}
    choose = [by_number[n] for n in args.choose]
    avail = available_estimators(ALL[0].space)
    methods = [m for m in avail if m not in S.FEATURES and not m.startswith("depara")]
    attr = [m + c + k for m in methods for c in S.COMPARISONS for k in S.CORRECTIONS]
    feats = [m + k for m in S.FEATURES for k in S.FEATURE_CORRECTIONS]
    fixed = [*attr, *feats, "depara", *S.DIRECTED, DEFAULT_ESTIMATOR]
    for w in ALL:
        for n in fixed:
            w.add(n)
        S.log(f"world {w.number}: {len(w.mats)} matrices, {len(w.names)} models "
              f"({time.perf_counter() - t0:.0f} s)")
    best_attr = best(choose, attr, zoo=True)  # with --zoo: a variant that works on real models
    chosen = {
        PROCEDURES[0]: best(choose, fixed, zoo=True),
        PROCEDURES[1]: combined(choose, best_attr, best(choose, [*feats, *S.DIRECTED])),
        PROCEDURES[2]: combined(choose, best_attr, best(choose, ["rankme", "coverage"])),
    }
    unmet = [p for p, c in chosen.items() if c is None]
    chosen = {p: c for p, c in chosen.items() if c is not None}
    if unmet:
        S.log(f"no choice passes the zoo check: {', '.join(unmet)}")
    default = best(choose, list(chosen.values()))
    S.log(f"chosen on worlds {args.choose}: {chosen}; default candidate {default}")
    for w in ALL:  # reported beside the candidates, chosen by nothing here
        for n in args.also:
            w.add(n)
    rows = list(dict.fromkeys([
        *methods, *S.FEATURES, "depara", *S.DIRECTED, DEFAULT_ESTIMATOR, *args.also,
        *chosen.values()
    ]))
    table: dict[str, dict[str, dict[str, dict]]] = {}  # est -> oracle -> group -> metrics
    groups = {
        **{f"world {w.number}": [w] for w in ALL},
        "choice worlds (pooled)": choose,
        "report worlds (pooled)": [by_number[n] for n in args.report],
    }
    for n in [*rows, *[x for x in ALL[0].mats if x not in rows]]:
        for o in ORACLES:
            for g, ws in groups.items():
                v = pooled(ws, n, o)
                # intervals for the reported rows; every other candidate: means only
                ci = bootstrap_targets(v, args.target_bootstrap) if n in rows else {}
                table.setdefault(n, {}).setdefault(o, {})[g] = {
                    **{k: float(np.nanmean(x)) for k, x in v.items()},
                    **{f"{k}_ci": c for k, c in ci.items()},
                }
    random = {o: {f"world {w.number}": w.random(o) for w in ALL} for o in ORACLES}
    twins = {
        n: {f"world {w.number}": twin_check(w.mats[n], w.tasks, w.kinds) for w in ALL}
        for n in rows
    }
    zoo = None
    if ZOO:
        for n in rows:
            ZOO[0].add(n)
        zoo = {"space": str(ZOO[0].space), "factor": ZOO[0].factor, "needed": ZOO[0].needed,
               "models": len(ZOO[0].names), "nearest": {n: ZOO[0].nearest[n] for n in rows}}
    result = {
        "worlds": {str(w.number): str(w.folder) for w in ALL},
        "choose": args.choose,
        "report": args.report,
        "by": S.BY,
        "selection_oracle": ORACLES[0],
        "methods": methods,
        "shipped_default": DEFAULT_ESTIMATOR,
        "also": args.also,
        "chosen": chosen,
        "unmet": unmet,
        "default_candidate": default,
        "best_attribution_variant": best_attr,
        "rows": rows,
        "table": table,
        "random": random,
        "twins": twins,
        "zoo": zoo,
        "targets": {f"world {w.number}": w.oracles[ORACLES[0]].targets for w in ALL},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "worlds.json").write_text(json.dumps(result, indent=1, default=float))
    (args.out / "worlds.md").write_text(markdown(result))
    (args.out / "worlds.csv").write_text(csv_table(result))
    S.log(markdown(result))
    return 0


def _cell(sc: dict, k: str) -> str:
    lo, hi = sc.get(k + "_ci", (math.nan, math.nan))
    return f"{S.fmt(sc[k])} ({lo:.2f}–{hi:.2f})" if math.isfinite(lo) else S.fmt(sc[k])


def _twins(r: dict, name: str, groups: list[str]) -> str:
    first = cases = 0
    for g in groups:
        a = r["twins"].get(name, {}).get(g, {}).get("all")
        if a:
            first, cases = first + a[0], cases + a[1]
    return f"{first}/{cases}" if cases else "–"


def _kind(r: dict, name: str) -> str:
    if name == r["default_candidate"]:
        return "**chosen on worlds " + "+".join(map(str, r["choose"])) + "**"
    if name in r["chosen"].values():
        return "chosen by: " + ", ".join(p for p, c in r["chosen"].items() if c == name)
    if name == r["shipped_default"]:
        return "shipped default"
    if name in EARLIER:
        return EARLIER[name]
    if name in r["methods"]:
        return "paper's comparison"
    return "directed" if name in S.DIRECTED else "baseline"


def markdown(r: dict) -> str:
    report = [f"world {n}" for n in r["report"]]
    choice = [f"world {n}" for n in r["choose"]]
    lines = [
        f"Chosen on worlds {', '.join(map(str, r['choose']))} (pooled mean {r['by']} against "
        f"`{r['selection_oracle']}`), reported on world(s) {', '.join(map(str, r['report']))}, "
        "which nothing was chosen on. Cells: mean over the world's targets (95% interval from "
        "resampling its targets). Relevant = the oracle's top 5, the target itself excluded. "
        "Twin first: same-task model nearest, over the worlds of the column group.",
        "",
        "Procedures and their choices: "
        + "; ".join(f"{p}: `{c}`" for p, c in r["chosen"].items())
        + f". Best attribution variant: `{r['best_attribution_variant']}`. "
        f"Default candidate (best procedure on the choice worlds): `{r['default_candidate']}`.",
    ]
    zoo = r.get("zoo")
    if zoo:
        lines += ["", f"Zoo check: only estimators whose nearest neighbour is of the same task "
                  f"family for at least {zoo['factor']:g} × chance ({zoo['needed']:.1f} models) on "
                  f"the real zoo (`{zoo['space']}`, {zoo['models']} models) could be chosen; "
                  "column *zoo*."
                  + (f" No choice passed it in: {', '.join(r['unmet'])}." if r.get("unmet") else "")]
    for o in [r["selection_oracle"], *[x for x in ORACLES if x != r["selection_oracle"]]]:
        for title, groups, pool in (
            ("held out", report, "report worlds (pooled)"),
            ("choice worlds (in-sample for the chosen rows)", choice, "choice worlds (pooled)"),
        ):
            lines += [
                "",
                f"Against `{o}.csv`, {title}:",
                "",
                "| estimator | kind | P@1 | P@3 | P@5 | ρ | wτ | nDCG@5 | twin first |"
                + (" zoo |" if zoo else ""),
                "|---|---|---|---|---|---|---|---|---|" + ("---|" if zoo else ""),
            ]
            for n in r["rows"]:
                sc = r["table"][n][o][pool]
                cells = " | ".join(_cell(sc, k) for k in S.METRICS)
                near = f" {zoo['nearest'][n][0]}/{zoo['nearest'][n][1]} |" if zoo else ""
                lines.append(f"| {n} | {_kind(r, n)} | {cells} | {_twins(r, n, groups)} |{near}")
            rnd = [r["random"][o][g] for g in groups]
            cells = " | ".join(S.fmt(float(np.mean([x[k] for x in rnd]))) for k in S.METRICS)
            lines.append(f"| random (expected) | reference | {cells} | – |" + (" – |" if zoo else ""))
        lines += [
            "",
            f"Per world against `{o}.csv` (P@3, the spread between worlds says how noisy one "
            "world is):",
            "",
            "| estimator | " + " | ".join(r["targets"]) + " |",
            "|---|" + "---|" * len(r["targets"]),
        ]
        for n in r["rows"]:
            lines.append(f"| {n} | " + " | ".join(
                S.fmt(r["table"][n][o][g]["P@3"]) for g in r["targets"]) + " |")
        lines.append("| random (expected) | " + " | ".join(
            S.fmt(r["random"][o][g]["P@3"]) for g in r["targets"]) + " |")
    return "\n".join(lines) + "\n"


def csv_table(r: dict) -> str:
    """estimator, oracle, group (a world or a pool), metric, mean and its 95% interval."""
    lines = ["estimator,oracle,group,metric,mean,ci_low,ci_high"]
    for n, by_oracle in r["table"].items():
        for o, by_group in by_oracle.items():
            for g, sc in by_group.items():
                for k in S.METRICS:
                    lo, hi = sc.get(k + "_ci", (math.nan, math.nan))
                    lines.append(f'"{n}",{o},{g},{k},{sc[k]!r},{lo!r},{hi!r}')
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
