"""One self-contained HTML report of a model space: per estimator a tree-ordered heatmap, a
dendrogram and the rankings; with an oracle, the P@K/R@K evaluation of every estimator."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import OnnxAttrError
from . import plots, trees
from .distances import DEFAULT_MEMORY_BYTES, LabelledMatrix, ranking
from .estimators import available_estimators, compute_affinity, describe
from .evaluation import Evaluation, Oracle, evaluate, read_oracle

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:0.5em 0;font-size:0.85em}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}
th{background:#f3f3f3} td.l,th.l{text-align:left}
img{max-width:100%} .row{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}
.note{color:#666;font-size:0.9em}
"""


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _fmt(v: float) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    h = "".join(f'<th class="{"l" if i < left else ""}">{html.escape(c)}</th>'
                for i, c in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{html.escape(c)}</td>'
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def _rankings(matrix: LabelledMatrix, top: int) -> str:
    rows = []
    for t in matrix.names:
        best = ranking(matrix, t)[:top]
        rows.append([t, *(f"{n} ({v:.3f})" for n, v in best)])
    return _table(["target", *(f"#{i + 1}" for i in range(min(top, len(matrix.names) - 1)))],
                  rows, left=top + 1)


def _evaluation_section(evals: Sequence[Evaluation]) -> str:
    ref = evals[0]
    ks = [k for k in (1, 2, 3, 5, 10) if k <= len(ref.k)]
    rows = [[e.estimator, *(_fmt(e.precision[k - 1]) for k in ks),
             *(_fmt(e.recall[k - 1]) for k in ks), _fmt(e.spearman)] for e in evals]
    rows.append(["random", *(_fmt(ref.random_precision[k - 1]) for k in ks),
                 *(_fmt(ref.random_recall[k - 1]) for k in ks), "–"])
    rows.append(["oracle", *(_fmt(ref.oracle_precision[k - 1]) for k in ks),
                 *(_fmt(ref.oracle_recall[k - 1]) for k in ks), "1.000"])
    head = ["estimator", *(f"P@{k}" for k in ks), *(f"R@{k}" for k in ks), "Spearman"]
    fig = plots.save(plots.curves_figure(evals), None)
    return (f"<h2>Evaluation against the oracle</h2><p class='note'>Relevant = oracle top-{ref.top}"
            " sources per target; the target is excluded from its own ranking.</p>"
            + _table(head, rows) + _img(fig, "P@K and R@K curves"))


def write_report(space_path: str | Path, out_path: str | Path,
                 oracle: str | Path | Oracle | None = None,
                 estimators: Sequence[str] | None = None, *,
                 mapping: Mapping[str, str] | None = None, top: int = 5,
                 linkage: str = trees.DEFAULT_LINKAGE, lam: float = 1.0, rank_top: int = 5,
                 use_cache: bool = True, memory_bytes: int = DEFAULT_MEMORY_BYTES,
                 progress: bool = False) -> Path:
    """Write ``out_path`` (one HTML file, images inline) for every estimator of the space
    (or ``estimators``), with the evaluation when ``oracle`` (CSV path or Oracle) is given."""
    space_path, out_path = Path(space_path), Path(out_path)
    names = list(estimators) if estimators else available_estimators(space_path)
    if not names:
        raise OnnxAttrError(f"{space_path} has no estimator with data in two models; add models")
    orc = read_oracle(oracle) if isinstance(oracle, (str, Path)) else oracle
    sections, evals, labels = [], [], []
    for name in names:
        matrix, _ = compute_affinity(space_path, name, lam=lam, use_cache=use_cache,
                                     memory_bytes=memory_bytes, progress=progress)
        labels.append(matrix.estimator)
        z = trees.linkage(matrix, linkage)
        info = describe(name)
        heat = plots.save(plots.heatmap_figure(matrix, trees.leaf_order(z)), None)
        tree = plots.save(plots.dendrogram_figure(z, matrix.names, f"{matrix.estimator} tree"),
                          None)
        excl = (f"<p class='note'>Without data for this estimator: "
                f"{html.escape(', '.join(matrix.excluded))}</p>" if matrix.excluded else "")
        sections.append(
            f"<h2 id='{html.escape(matrix.estimator)}'>{html.escape(matrix.estimator)}</h2>"
            f"<p>{html.escape(info.description)}; {len(matrix.names)} models.</p>{excl}"
            f"<div class='row'>{_img(heat, 'heatmap')}{_img(tree, 'dendrogram')}</div>"
            f"<h3>Closest sources per target</h3>{_rankings(matrix, rank_top)}"
            f"<details><summary>Newick</summary><pre>"
            f"{html.escape(trees.to_newick(z, matrix.names))}</pre></details>")
        if orc is not None:
            evals.append(evaluate(matrix, orc, top=top, mapping=mapping))
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    toc = " · ".join(f"<a href='#{html.escape(n)}'>{html.escape(n)}</a>" for n in labels)
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>onnxattr report: "
            f"{html.escape(space_path.name)}</title><style>{_CSS}</style></head><body>"
            f"<h1>Model space {html.escape(space_path.name)}</h1>"
            f"<p class='note'>Generated {stamp}. Affinity: higher = more similar; trees: "
            f"{html.escape(linkage)} linkage on affinity rows. Estimators: {toc}</p>"
            + (_evaluation_section(evals) if evals else "") + "".join(sections)
            + "</body></html>")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(page, encoding="utf-8")
    return out_path
