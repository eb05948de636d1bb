"""One self-contained HTML report of a model space: per estimator a tree-ordered heatmap, a
dendrogram and the rankings; with an oracle, the P@K/R@K evaluation of every estimator."""

from __future__ import annotations

import base64
import datetime as _dt
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from ..errors import OnnxAttrWarning
from . import plots, trees
from .confidence import Disagreement, Ties
from .distances import DEFAULT_MEMORY_BYTES, LabelledMatrix, ranking
from .evaluation import Evaluation, Oracle, read_oracle
from .space_view import (
    EstimatorView,
    ModelInfo,
    estimator_names,
    estimator_views,
    map_method,
    probe_examples,
    read_models,
    view_disagreements,
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


def _b64(png: bytes) -> str:
    return base64.b64encode(png).decode()


def _fmt(v: float) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> dict[str, Any]:
    """A table of the view-model: the template aligns the first ``left`` columns left."""
    return {"header": list(header), "rows": [list(r) for r in rows], "left": left}


def _rankings(matrix: LabelledMatrix, top: int, ties: Ties | None = None) -> dict[str, Any]:
    """Each target's ``top`` sources; with ``ties``, ≈ before a source the probe cannot tell
    from the one before it."""
    rows = []
    for t in matrix.names:
        best = ranking(matrix, t)[:top]
        tied = ({n: x for n, _, x in ties.ranked(t)} if ties is not None and t in ties.names
                else {})
        rows.append([t, *(f"{'≈ ' if tied.get(n) else ''}{n} ({v:.3f})" for n, v in best)])
    return _table(["target", *(f"#{i + 1}" for i in range(min(top, len(matrix.names) - 1)))],
                  rows, left=top + 1)


def _with_ci(v: float, ci: tuple[float, float] | None) -> str:
    return _fmt(v) + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci is not None else "")


def _evaluation_view(evals: Sequence[Evaluation],
                     cis: Mapping[str, EvaluationCI] | None = None) -> dict[str, Any]:
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
    return {"top": ref.top,
            "ci_note": " Brackets: 95% interval over resamples of the probe set." if cis else "",
            "notes": list(dict.fromkeys(n for e in evals for n in e.warnings)),
            "left_out": ", ".join(ref.left_out),
            "table": _table(head, rows),
            "png": _b64(plots.save(plots.curves_figure(evals), None))}


def _models_table(models: Sequence[ModelInfo]) -> dict[str, Any]:
    """The space's models: what they are and how well the converted encoder matched
    onnxruntime."""
    head = ["model", "framework", "task", "encoder node", "input size", "verify rel. err",
            "maps"]
    return _table(head, [[m.name, *m.cells()] for m in models], left=4)


def _example_maps(space_path: Path, names: Sequence[str], method: str, n_images: int = 4,
                  max_models: int = 24) -> dict[str, str] | None:
    _, images, maps = probe_examples(space_path, names, method, n_images)
    if not maps:
        return None
    shown = dict(list(maps.items())[:max_models])
    fig = plots.save(plots.example_maps_figure(images, shown, method), None)
    more = (f" (first {max_models} of {len(maps)} models)" if len(maps) > max_models else "")
    return {"method": method, "more": more, "png": _b64(fig)}


def _stability_view(stab: Stability) -> dict[str, str | None]:
    line = (f"Probe stability ({stab.resampling}): two "
            f"disjoint halves of the probe set rank sources alike at ρ = {stab.agreement:.2f} "
            f"(mean over targets); the top source stays first in "
            f"{float(np.median(stab.top1_kept)):.0%} of draws (median over targets).")
    return {"line": line, "warning": stab.note()}


def _section_view(v: EstimatorView, rank_top: int) -> dict[str, Any]:
    """One estimator's section: heatmap, tree, rankings, stability, Newick."""
    matrix, z = v.matrix, v.linkage
    heat = plots.save(plots.heatmap_figure(matrix, v.leaf_order), None)
    tree = plots.save(plots.dendrogram_figure(z, matrix.names, f"{matrix.estimator} tree"), None)
    return {"name": matrix.estimator, "description": v.description,
            "n_models": len(matrix.names), "excluded": ", ".join(matrix.excluded),
            "stability": _stability_view(v.stability) if v.stability is not None else None,
            "heatmap": _b64(heat), "tree": _b64(tree),
            "rankings": _rankings(matrix, rank_top, v.ties),
            "ties_note": v.ties.legend() if v.ties is not None else None,
            "newick": trees.to_newick(z, matrix.names)}


def _agreement_view(compared: Sequence[str], dis: Sequence[Disagreement]) -> dict[str, Any] | None:
    """Per target, each compared estimator's closest source, the lowest Kendall τ between two
    of them and ≠ where they disagree."""
    if not dis:
        return None
    rows = [[d.target, "≠" if d.disagree else "", *(d.first.get(e, "–") for e in compared),
             _fmt(d.min_tau)] for d in dis]
    return {"estimators": ", ".join(compared),
            "n_disagree": sum(d.disagree for d in dis), "n_targets": len(dis),
            "table": _table(["target", "≠", *compared, "lowest τ"], rows, left=2)}


def render_report(view: Mapping[str, Any]) -> str:
    """The page of a report view-model (``templates/report.html.j2``, autoescaped)."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("onnxattr.analysis", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    return env.get_template("report.html.j2").render(css=_CSS, **view)


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
                 stabilities: Mapping[str, Stability] | None = None, **params: Any) -> Path:
    """Write ``out_path`` (one HTML file, images inline) for every estimator of the space
    (or ``estimators``): a models table, example maps, and per estimator a heatmap, a tree, the
    rankings and (``bootstrap`` > 0) how stable they are under probe resampling; with ``oracle``
    (CSV path or Oracle), the evaluation of every estimator (with probe-resampling intervals).
    ``explorer``: also write the interactive explorer of the same results beside it
    (:func:`explorer_path`) and link to it. ``lam`` and ``params`` are estimator parameters, as
    for :func:`~onnxattr.analysis.estimators.compute_affinity`. ``stabilities``: resampling
    already computed, by estimator (see :func:`~onnxattr.analysis.space_view.estimator_views`)."""
    from .explorer import write_explorer

    space_path, out_path = Path(space_path), Path(out_path)
    names = estimator_names(space_path, estimators)
    orc = read_oracle(oracle) if isinstance(oracle, (str, Path)) else oracle
    models = read_models(space_path)
    method = map_method(names, models)
    views = list(estimator_views(space_path, names, orc, mapping=mapping, top=top,
                                 linkage=linkage, lam=lam, use_cache=use_cache,
                                 memory_bytes=memory_bytes, bootstrap=bootstrap,
                                 progress=progress, stabilities=stabilities, **params))
    sections = [_section_view(v, rank_top) for v in views]
    evals = [v.evaluation for v in views if v.evaluation is not None]
    cis = {v.matrix.estimator: v.evaluation_ci for v in views if v.evaluation_ci is not None}
    for note in dict.fromkeys(n for e in evals for n in e.warnings):
        warnings.warn(note, OnnxAttrWarning, stacklevel=2)
    if evals and evals[0].left_out:
        warnings.warn(f"oracle restricted to the models present; left out: "
                      f"{', '.join(evals[0].left_out)}", OnnxAttrWarning, stacklevel=2)
    exp = None
    if explorer:
        exp = write_explorer(space_path, explorer_path(out_path), views=views, models=models,
                             oracle=orc, map_method=method).path.name
    page = render_report({
        "title": space_path.name,
        "stamp": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "linkage": linkage, "explorer": exp, "models": _models_table(models),
        "examples": (_example_maps(space_path, [m.name for m in models], method)
                     if method else None),
        "evaluation": _evaluation_view(evals, cis) if evals else None,
        "agreement": _agreement_view(*view_disagreements(views)),
        "sections": sections})
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(page, encoding="utf-8")
    return out_path
