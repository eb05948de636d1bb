"""One self-contained HTML report of a model space: per estimator a tree-ordered heatmap, a
dendrogram and the rankings; with an oracle, the P@K/R@K evaluation of every estimator."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OnnxAttrError, OnnxAttrWarning
from ..space import open_space
from . import plots, trees
from .distances import DEFAULT_MEMORY_BYTES, LabelledMatrix, ranking, space_models
from .estimators import available_estimators, compute_affinity, describe
from .evaluation import Evaluation, Oracle, evaluate, read_oracle
from .map_compare import parse_estimator
from .selection import with_default
from .stability import EvaluationCI, Stability, evaluation_ci, ranking_stability


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
    ci_note = (" Brackets: 95% interval over bootstrap resamples of the probe set."
               if cis else "")
    notes = "".join(f"<p class='note'><b>Note:</b> {html.escape(n)}</p>"
                    for n in dict.fromkeys(n for e in evals for n in e.warnings))
    if ref.left_out:
        notes += (f"<p class='note'>Oracle restricted to the models present; left out (not in "
                  f"the space): {html.escape(', '.join(ref.left_out))}</p>")
    return (f"<h2>Evaluation against the oracle</h2><p class='note'>Relevant = oracle top-{ref.top}"
            f" sources per target; the target is excluded from its own ranking.{ci_note}</p>" + notes
            + _table(head, rows) + _img(fig, "P@K and R@K curves"))


def _models_section(space_path: Path) -> tuple[str, list[str], list[str]]:
    """Table of the space's models (what they are and how well the converted encoder matched
    onnxruntime); also returns the model names and the attribution methods present."""
    rows, names, methods = [], [], []
    with open_space(space_path, "r") as f:
        for name in space_models(f):
            g = f["models"][name]
            a = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in g.attrs.items()}
            try:
                size = json.loads(a.get("preprocessing", "{}")).get("input_size")
            except (json.JSONDecodeError, AttributeError):
                size = None
            err = a.get("verify_rel_err")
            have = sorted(g.get("maps", {}))
            methods += [m for m in have if m not in methods]
            names.append(name)
            rows.append([name, str(a.get("framework", "") or "–"), str(a.get("task", "") or "–"),
                         str(a.get("encoder_node", "") or "–"),
                         "x".join(map(str, size)) if size else "–",
                         "–" if err is None else f"{float(err):.1e}", ", ".join(have) or "–"])
    head = ["model", "framework", "task", "encoder node", "input size", "verify rel. err",
            "maps"]
    html_ = (f"<h2>Models</h2><p class='note'>verify rel. err: relative error of the converted "
             f"encoder against onnxruntime on probe images.</p>{_table(head, rows, left=4)}")
    return html_, names, methods


def _example_maps(space_path: Path, names: Sequence[str], method: str, n_images: int = 4,
                  max_models: int = 24) -> str:
    with open_space(space_path, "r") as f:
        with_maps = [n for n in names if f"models/{n}/maps/{method}" in f]
        if not with_maps or "probe/images" not in f:
            return ""
        n_probe = f["probe/images"].shape[0]
        idx = sorted(set(np.linspace(0, n_probe - 1, min(n_images, n_probe)).astype(int)))
        images = f["probe/images"][idx]
        shown = with_maps[:max_models]
        maps = {n: f[f"models/{n}/maps/{method}"][idx] for n in shown}
    fig = plots.save(plots.example_maps_figure(images, maps, method), None)
    more = (f" (first {max_models} of {len(with_maps)} models)" if len(with_maps) > max_models
            else "")
    return (f"<h2>Example attribution maps</h2><p class='note'>{html.escape(method)} maps at probe "
            f"resolution{more}; red = positive, blue = negative.</p>{_img(fig, 'example maps')}")


def _stability_note(stab: Stability) -> str:
    line = (f"Probe stability ({stab.n_boot} bootstrap draws of {stab.n_images} images): two "
            f"disjoint halves of the probe set rank sources alike at ρ = {stab.agreement:.2f} "
            f"(mean over targets); the top source stays first in "
            f"{float(np.median(stab.top1_kept)):.0%} of draws (median over targets).")
    warn = stab.note()
    return (f"<p class='note'>{html.escape(line)}</p>"
            + (f"<p><b>{html.escape(warn)}</b></p>" if warn else ""))


def write_report(space_path: str | Path, out_path: str | Path,
                 oracle: str | Path | Oracle | None = None,
                 estimators: Sequence[str] | None = None, *,
                 mapping: Mapping[str, str] | None = None, top: int = 5,
                 linkage: str = trees.DEFAULT_LINKAGE, lam: float = 1.0, rank_top: int = 5,
                 use_cache: bool = True, memory_bytes: int = DEFAULT_MEMORY_BYTES,
                 bootstrap: int = 20, progress: bool = False, **params: Any) -> Path:
    """Write ``out_path`` (one HTML file, images inline) for every estimator of the space
    (or ``estimators``): a models table, example maps, and per estimator a heatmap, a tree, the
    rankings and (``bootstrap`` > 0) how stable they are under probe resampling; with ``oracle``
    (CSV path or Oracle), the evaluation of every estimator (with probe-resampling intervals).
    ``lam`` and ``params`` are estimator parameters, as for
    :func:`~onnxattr.analysis.estimators.compute_affinity`."""
    space_path, out_path = Path(space_path), Path(out_path)
    names = (list(estimators) if estimators
             else with_default(space_path, available_estimators(space_path)))
    if not names:
        raise OnnxAttrError(f"{space_path} has no estimator with data in two models; add models")
    orc = read_oracle(oracle) if isinstance(oracle, (str, Path)) else oracle
    models_html, model_names, methods = _models_section(space_path)
    map_method = next((parse_estimator(n).base for n in names
                       if parse_estimator(n).base in methods), methods[0] if methods else None)
    sections, evals, labels, cis = [], [], [], {}
    for name in names:
        matrix, _ = compute_affinity(space_path, name, lam=lam, use_cache=use_cache,
                                     memory_bytes=memory_bytes, progress=progress, **params)
        labels.append(matrix.estimator)
        z = trees.linkage(matrix, linkage)
        info = describe(name)
        heat = plots.save(plots.heatmap_figure(matrix, trees.leaf_order(z)), None)
        tree = plots.save(plots.dendrogram_figure(z, matrix.names, f"{matrix.estimator} tree"),
                          None)
        excl = (f"<p class='note'>Without data for this estimator: "
                f"{html.escape(', '.join(matrix.excluded))}</p>" if matrix.excluded else "")
        stab = (ranking_stability(space_path, name, n_boot=bootstrap, lam=lam,
                                  memory_bytes=memory_bytes) if bootstrap > 1 else None)
        sections.append(
            f"<h2 id='{html.escape(matrix.estimator)}'>{html.escape(matrix.estimator)}</h2>"
            f"<p>{html.escape(info.description)}; {len(matrix.names)} models.</p>{excl}"
            + (_stability_note(stab) if stab is not None else "") +
            f"<div class='row'>{_img(heat, 'heatmap')}{_img(tree, 'dendrogram')}</div>"
            f"<h3>Closest sources per target</h3>{_rankings(matrix, rank_top)}"
            f"<details><summary>Newick</summary><pre>"
            f"{html.escape(trees.to_newick(z, matrix.names))}</pre></details>")
        if orc is not None:
            evals.append(evaluate(matrix, orc, top=top, mapping=mapping))
            if stab is not None:
                cis[matrix.estimator] = evaluation_ci(stab, orc, top, mapping=mapping)
    for note in dict.fromkeys(n for e in evals for n in e.warnings):
        warnings.warn(note, OnnxAttrWarning, stacklevel=2)
    if evals and evals[0].left_out:
        warnings.warn(f"oracle restricted to the models present; left out: "
                      f"{', '.join(evals[0].left_out)}", OnnxAttrWarning, stacklevel=2)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    toc = " · ".join(f"<a href='#{html.escape(n)}'>{html.escape(n)}</a>" for n in labels)
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>onnxattr report: "
            f"{html.escape(space_path.name)}</title><style>{_CSS}</style></head><body>"
            f"<h1>Model space {html.escape(space_path.name)}</h1>"
            f"<p class='note'>Generated {stamp}. Affinity: higher = more similar; trees: "
            f"{html.escape(linkage)} linkage on affinity rows. Estimators: {toc}</p>"
            + models_html
            + (_example_maps(space_path, model_names, map_method) if map_method else "")
            + (_evaluation_section(evals, cis) if evals else "") + "".join(sections)
            + "</body></html>")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(page, encoding="utf-8")
    return out_path
