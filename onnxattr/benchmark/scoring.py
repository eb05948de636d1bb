"""Every estimator of the benchmark's spaces scored against the oracle (P@K, Spearman)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .world import Log


def evaluate_estimators(spaces: dict[str, Path], oracle: Path, log: Log) -> list[dict[str, Any]]:
    """Every estimator of the main space, lrp per preset, and random, against `oracle`."""
    from ..analysis.estimators import available_estimators, compute_affinity
    from ..analysis.evaluation import Oracle, evaluate, read_oracle

    orc = read_oracle(oracle)
    names = [n for n in orc.names]
    rows = []
    jobs = [(spaces["main"], e, e) for e in available_estimators(spaces["main"])]
    jobs += [(sp, "lrp", key) for key, sp in spaces.items() if key != "main"]
    ev = None
    for sp, est, label in jobs:
        t0 = time.perf_counter()
        mat, _ = compute_affinity(sp, est, names, use_cache=False)
        secs = time.perf_counter() - t0
        ev = evaluate(mat, orc, top=5)
        per_target = [
            evaluate(mat, Oracle([t], orc.sources, orc.values[i : i + 1]), top=5)
            for i, t in enumerate(orc.targets)
        ]
        p5 = [e.precision[min(5, len(e.precision)) - 1] for e in per_target]
        rows.append(
            {
                **_row(label, ev.precision, ev.spearman, secs),
                "P@5_se": _se(p5),
                "spearman_se": _se(list(ev.spearman_per_target.values())),
            }
        )
        log(f"{label}: P@1 {ev.precision[0]:.3f}  ρ {ev.spearman:.3f} ({secs:.1f} s)")
    if ev is not None:
        rows.append(_row("random (expected)", ev.random_precision, 0.0, 0.0))
        rows.append(_row("oracle", ev.oracle_precision, 1.0, 0.0))
    return rows


def _row(name: str, precision: Sequence[float], rho: float, secs: float) -> dict[str, Any]:
    p = {f"P@{k}": float(precision[k - 1]) if len(precision) >= k else math.nan for k in (1, 3, 5)}
    return {"estimator": name, **p, "spearman": rho, "seconds": secs}


def _se(values: Sequence[float]) -> float:
    """Standard error of the mean over targets (NaN entries dropped)."""
    v = np.array([x for x in values if x is not None and math.isfinite(x)])
    return float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan


def _pm(value: float, se: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.3f}" if se is None or not math.isfinite(se) else f"{value:.3f} ± {se:.3f}"


def table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table; ± = standard error over targets."""
    lines = ["| estimator | P@1 | P@3 | P@5 | Spearman | wall s |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['estimator']} | {r['P@1']:.3f} | {r['P@3']:.3f} | "
            f"{_pm(r['P@5'], r.get('P@5_se'))} | {_pm(r['spearman'], r.get('spearman_se'))}"
            f" | {r['seconds']:.1f} |"
        )
    return "\n".join(lines)
