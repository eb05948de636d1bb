"""One self-contained HTML report of a model space: per estimator a tree-ordered heatmap, a
dendrogram and the rankings; with an oracle, the P@K/R@K evaluation of every estimator."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OnnxAttrWarning
from . import plots, trees
from .distances import DEFAULT_MEMORY_BYTES, LabelledMatrix, ranking
from .evaluation import Evaluation, Oracle, read_oracle
from .space_view import (
    ModelInfo,
    estimator_names,
    estimator_views,
    map_method,
    probe_examples,
    read_models,
)
from .stability import EvaluationCI, Stability


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table: the tables people paste into notes and issues."""
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(r) + " |" for r in lines) + "\n"


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


def _with_ci(v: float, ci: tuple[float, float] | None) -> str:
    return _fmt(v) + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci is not None else "")


def _evaluation_section(evals: Sequence[Evaluation],
                        cis: Mapping[str, EvaluationCI] | None = None) -> str:
    ref = evals[0]
    cis = cis or {}
    ks = [k for k in (1, 2, 3, 5, 10) if k <= len(ref.k)]
    rows = [[e.estimator,
             *(_with_ci(e.precision[k - 1], cis[e.estimator].precision.get(k)
                        if e.estimator in cis else None) for k in ks),
             *(_fmt(e.recall[k - 1]) for k in ks),
             _with_ci(e.spearman, cis[e.estimator].spearman if e.estimator in cis else None)]
            for e in evals]
    rows.append(["random", *(_fmt(ref.random_precision[k - 1]) for k in ks),
                 *(_fmt(ref.random_recall[k - 1]) for k in ks), "–"])
    rows.append(["oracle", *(_fmt(ref.oracle_precision[k - 1]) for k in ks),
                 *(_fmt(ref.oracle_recall[k - 1]) for k in ks), "1.000"])
    head = ["estimator", *(f"P@{k}" for k in ks), *(f"R@{k}" for k in ks), "Spearman"]
    fig = plots.save(plots.curves_figure(evals), None)
    ci_note = (" Brackets: 95% interval over resamples of the probe set."
               if cis else "")
    notes = "".join(f"<p class='note'><b>Note:</b> {html.escape(n)}</p>"
                    for n in dict.fromkeys(n for e in evals for n in e.warnings))
    if ref.left_out:
        notes += (f"<p class='note'>Oracle restricted to the models present; left out (not in "
                  f"the space): {html.escape(', '.join(ref.left_out))}</p>")
    return (f"<h2>Evaluation against the oracle</h2><p class='note'>Relevant = oracle top-{ref.top}"
            f" sources per target; the target is excluded from its own ranking.{ci_note}</p>" + notes
            + _table(head, rows) + _img(fig, "P@K and R@K curves"))


def _models_section(models: Sequence[ModelInfo]) -> str:
    """Table of the space's models: what they are and how well the converted encoder matched
    onnxruntime."""
    head = ["model", "framework", "task", "encoder node", "input size", "verify rel. err",
            "maps"]
    rows = [[m.name, *m.cells()] for m in models]
    return (f"<h2>Models</h2><p class='note'>verify rel. err: relative error of the converted "
            f"encoder against onnxruntime on probe images.</p>{_table(head, rows, left=4)}")


def _example_maps(space_path: Path, names: Sequence[str], method: str, n_images: int = 4,
                  max_models: int = 24) -> str:
    _, images, maps = probe_examples(space_path, names, method, n_images)
    if not maps:
        return ""
    shown = dict(list(maps.items())[:max_models])
    fig = plots.save(plots.example_maps_figure(images, shown, method), None)
    more = (f" (first {max_models} of {len(maps)} models)" if len(maps) > max_models else "")
    return (f"<h2>Example attribution maps</h2><p class='note'>{html.escape(method)} maps at probe "
            f"resolution{more}; red = positive, blue = negative.</p>{_img(fig, 'example maps')}")


def _stability_note(stab: Stability) -> str:
    line = (f"Probe stability ({stab.resampling}): two "
            f"disjoint halves of the probe set rank sources alike at ρ = {stab.agreement:.2f} "
            f"(mean over targets); the top source stays first in "
            f"{float(np.median(stab.top1_kept)):.0%} of draws (median over targets).")
    warn = stab.note()
    return (f"<p class='note'>{html.escape(line)}</p>"
            + (f"<p><b>{html.escape(warn)}</b></p>" if warn else ""))


def explorer_path(report_path: str | Path) -> Path:
    """Where `write_report` puts the interactive explorer: beside the report, ``NAME.explorer.html``."""
    report_path = Path(report_path)
    return report_path.with_name(report_path.stem + ".explorer.html")


def write_report(space_path: str | Path, out_path: str | Path,
                 oracle: str | Path | Oracle | None = None,
                 estimators: Sequence[str] | None = None, *,
                 mapping: Mapping[str, str] | None = None, top: int = 5,
                 linkage: str = trees.DEFAULT_LINKAGE, lam: float = 1.0, rank_top: int = 5,
                 use_cache: bool = True, memory_bytes: int = DEFAULT_MEMORY_BYTES,
                 bootstrap: int = 20, progress: bool = False, explorer: bool = True,
                 **params: Any) -> Path:
    """Write ``out_path`` (one HTML file, images inline) for every estimator of the space
    (or ``estimators``): a models table, example maps, and per estimator a heatmap, a tree, the
    rankings and (``bootstrap`` > 0) how stable they are under probe resampling; with ``oracle``
    (CSV path or Oracle), the evaluation of every estimator (with probe-resampling intervals).
    ``explorer``: also write the interactive explorer of the same results beside it
    (:func:`explorer_path`) and link to it. ``lam`` and ``params`` are estimator parameters, as
    for :func:`~onnxattr.analysis.estimators.compute_affinity`."""
    from .explorer import write_explorer

    space_path, out_path = Path(space_path), Path(out_path)
    names = estimator_names(space_path, estimators)
    orc = read_oracle(oracle) if isinstance(oracle, (str, Path)) else oracle
    models = read_models(space_path)
    method = map_method(names, models)
    views = list(estimator_views(space_path, names, orc, mapping=mapping, top=top,
                                 linkage=linkage, lam=lam, use_cache=use_cache,
                                 memory_bytes=memory_bytes, bootstrap=bootstrap,
                                 progress=progress, **params))
    sections = []
    for v in views:
        matrix, z, stab = v.matrix, v.linkage, v.stability
        heat = plots.save(plots.heatmap_figure(matrix, v.leaf_order), None)
        tree = plots.save(plots.dendrogram_figure(z, matrix.names, f"{matrix.estimator} tree"),
                          None)
        excl = (f"<p class='note'>Without data for this estimator: "
                f"{html.escape(', '.join(matrix.excluded))}</p>" if matrix.excluded else "")
        sections.append(
            f"<h2 id='{html.escape(matrix.estimator)}'>{html.escape(matrix.estimator)}</h2>"
            f"<p>{html.escape(v.description)}; {len(matrix.names)} models.</p>{excl}"
            + (_stability_note(stab) if stab is not None else "") +
            f"<div class='row'>{_img(heat, 'heatmap')}{_img(tree, 'dendrogram')}</div>"
            f"<h3>Closest sources per target</h3>{_rankings(matrix, rank_top)}"
            f"<details><summary>Newick</summary><pre>"
            f"{html.escape(trees.to_newick(z, matrix.names))}</pre></details>")
    evals = [v.evaluation for v in views if v.evaluation is not None]
    cis = {v.matrix.estimator: v.evaluation_ci for v in views if v.evaluation_ci is not None}
    for note in dict.fromkeys(n for e in evals for n in e.warnings):
        warnings.warn(note, OnnxAttrWarning, stacklevel=2)
    if evals and evals[0].left_out:
        warnings.warn(f"oracle restricted to the models present; left out: "
                      f"{', '.join(evals[0].left_out)}", OnnxAttrWarning, stacklevel=2)
    link = ""
    if explorer:
        exp = write_explorer(space_path, explorer_path(out_path), views=views, models=models,
                             oracle=orc, map_method=method).path
        link = (f"<p><b>Interactive explorer</b> (pick a target, switch estimators, compare "
                f"maps): <a href='{html.escape(exp.name)}'>{html.escape(exp.name)}</a></p>")
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    toc = " · ".join(f"<a href='#{html.escape(v.matrix.estimator)}'>"
                     f"{html.escape(v.matrix.estimator)}</a>" for v in views)
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>onnxattr report: "
            f"{html.escape(space_path.name)}</title><style>{_CSS}</style></head><body>"
            f"<h1>Model space {html.escape(space_path.name)}</h1>"
            f"<p class='note'>Generated {stamp}. Affinity: higher = more similar; trees: "
            f"{html.escape(linkage)} linkage on affinity rows. Estimators: {toc}</p>" + link
            + _models_section(models)
            + (_example_maps(space_path, [m.name for m in models], method) if method else "")
            + (_evaluation_section(evals, cis) if evals else "") + "".join(sections)
            + "</body></html>")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(page, encoding="utf-8")
    return out_path
