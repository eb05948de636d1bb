"""Whether the oracle measures what the world was built to relate: self-transfer, related tasks,
and stability of a task's encoder across seeds, frameworks and architectures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .world import RELATED


def sanity(oracle_full: Path, manifest: list[dict[str, Any]]) -> dict[str, Any]:
    """Self-transfer ranks, related-task ranks, seed (and framework/architecture) stability."""
    from scipy.stats import spearmanr

    from ..analysis.evaluation import read_oracle

    orc = read_oracle(oracle_full)
    t_idx = {t: i for i, t in enumerate(orc.targets)}
    s_idx = {s: j for j, s in enumerate(orc.sources)}
    primary = [s for s in orc.sources if s in t_idx]
    self_rank = {}
    for t, i in t_idx.items():
        row = orc.values[i, [s_idx[s] for s in primary]]
        order = [primary[j] for j in np.argsort(-row, kind="stable")]
        self_rank[t] = order.index(t) + 1 if t in order else None
    related = {}
    for a, b in RELATED:
        if a in t_idx and b in t_idx:
            for t, s in ((a, b), (b, a)):
                others = [p for p in primary if p != t]
                row = orc.values[t_idx[t], [s_idx[p] for p in others]]
                order = [others[j] for j in np.argsort(-row, kind="stable")]
                related[f"{s} → {t}"] = {"rank": order.index(s) + 1, "of": len(others)}
    # each target row z-scored over all sources: a column then says how a source ranks per
    # target, without the targets' own difficulty (which alone makes any two columns agree)
    z = (orc.values - orc.values.mean(1, keepdims=True)) / orc.values.std(1, keepdims=True)
    variants = {}
    for e in manifest:
        base = e["task"]
        if e["name"] == base or e["name"] not in s_idx or base not in s_idx:
            continue
        rows = [i for t, i in t_idx.items() if t != base]
        kind = (
            "seed"
            if e["seed"] != 0
            else "framework"
            if e["framework"] != "pytorch"
            else "architecture/input"
        )
        variants[e["name"]] = {
            "of": base,
            "kind": kind,
            "spearman_over_other_targets": float(
                spearmanr(z[rows, s_idx[base]], z[rows, s_idx[e["name"]]]).statistic
            ),
            "self_score": float(orc.values[t_idx[base], s_idx[e["name"]]]),
            "primary_self_score": float(orc.values[t_idx[base], s_idx[base]]),
        }
    seeds = [v["spearman_over_other_targets"] for v in variants.values() if v["kind"] == "seed"]
    # the oracle's rankings when the seed-1 encoders replace their seed-0 twins as sources
    swap = {v["of"]: k for k, v in variants.items() if v["kind"] == "seed"}
    row_rho = {}
    if swap:
        alt = [swap.get(p, p) for p in primary]
        for t, i in t_idx.items():
            keep = [j for j, p in enumerate(primary) if p != t]
            a = orc.values[i, [s_idx[primary[j]] for j in keep]]
            b = orc.values[i, [s_idx[alt[j]] for j in keep]]
            row_rho[t] = float(spearmanr(a, b).statistic)
    return {
        "self_rank": self_rank,
        "self_first": sum(r == 1 for r in self_rank.values()),
        "n_targets": len(self_rank),
        "related": related,
        "variants": variants,
        "seed_spearman_mean": float(np.mean(seeds)) if seeds else None,
        "seed_swap_row_spearman": row_rho,
        "seed_swap_row_spearman_mean": float(np.mean(list(row_rho.values()))) if row_rho else None,
    }
