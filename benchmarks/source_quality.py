"""Exploratory, post hoc: does a label-free *source-quality* term explain what the symmetric
estimators miss on the mini-Taskonomy oracle?

    python benchmarks/source_quality.py --space bench/space.h5 --oracle bench/oracle_full.csv \\
        --also-oracle bench/oracle.csv

The recipe-2 oracle has a strong source effect (one encoder is the best source for five targets),
which no similarity between two models can express. This script tests the obvious next step:
RankMe (Garrido et al., ICML 2023), the effective rank of a source's encoder outputs on the probe
images, a published label-free predictor of downstream quality. As a matrix, A[t, s] = RankMe(s),
the same for every target: the registered directed estimator ``rankme``
(:mod:`onnxattr.analysis.directed`; divided by min(Np, D), which ranks sources alike here). Procedure (c): the best attribution variant of
``select_estimators.py`` plus that term, the weight fitted on training targets, scored leave one
target out. The idea came from looking at this oracle. Its held-out figure is therefore weaker
evidence than ``select_estimators.py``'s fixed protocol, and nothing here changes the default.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scipy.stats import spearmanr

from onnxattr.analysis.distances import LabelledMatrix
from onnxattr.analysis.estimators import available_estimators, compute_affinity
from onnxattr.analysis.evaluation import read_oracle
from onnxattr.analysis.selection import (
    best_of,
    fit_weight,
    leave_one_target_out,
    target_scores,
)

sys.path.insert(0, str(Path(__file__).parent))
from select_estimators import BY, COMPARISONS, CORRECTIONS, FEATURES, WEIGHTS  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--space", type=Path, required=True)
    ap.add_argument("--oracle", type=Path, required=True)
    ap.add_argument("--also-oracle", type=Path, action="append", default=[])
    ap.add_argument("--top", type=int, default=5)
    args = ap.parse_args(argv)
    oracle = read_oracle(args.oracle)
    names = list(oracle.sources)
    qmat = compute_affinity(args.space, "rankme", names)[0]
    quality = qmat.values[0]
    z = (oracle.values - oracle.values.mean(1, keepdims=True)) / oracle.values.std(1, keepdims=True)
    cols = [names.index(s) for s in oracle.sources]
    rho = spearmanr(quality[cols], z.mean(0)).statistic
    print(f"Spearman(RankMe of a source, its mean z-scored transfer over targets): {rho:.2f}")

    methods = [
        m for m in available_estimators(args.space) if m not in FEATURES and "depara" not in m
    ]
    attr = {
        m + c + k: compute_affinity(args.space, m + c + k, names)[0]
        for m in methods
        for c in COMPARISONS
        for k in CORRECTIONS
    }
    scores = {n: target_scores(m, oracle, args.top) for n, m in attr.items()}

    def with_quality(idx: list[int]) -> LabelledMatrix:
        a = best_of(scores, idx, BY)
        return fit_weight(attr[a], qmat, oracle, idx, WEIGHTS, BY, args.top)[1]

    print("| estimator | oracle | P@1 | P@3 | P@5 | ρ |\n|---|---|---|---|---|---|")
    for path in [args.oracle, *args.also_oracle]:
        orc = read_oracle(path)
        rows = {
            "rankme alone (fixed)": target_scores(qmat, orc, args.top).mean(),
            "LOTO (c): attribution variant + rankme, fitted weight": leave_one_target_out(
                oracle, with_quality, args.top, score_on=orc
            ).mean(),
        }
        for label, sc in rows.items():
            cells = " | ".join(f"{sc[k]:.3f}" for k in ("P@1", "P@3", "P@5", "spearman"))
            print(f"| {label} | {path.name} | {cells} |")
    sel = leave_one_target_out(oracle, with_quality, args.top)
    print("choices in the folds:", sorted(set(sel.chosen.values())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
