"""CLI for the distance/evaluation stage: estimators, distance, rank, evaluate, tree, heatmap, report.

Heavy modules (scipy, matplotlib) are imported inside the commands so `onnxattr --help` stays fast.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import OnnxAttrError
from ._app import PANEL_ANALYSE, Table, command, console, warn

if TYPE_CHECKING:
    from .. import LabelledMatrix

LINKAGES = "single, complete, average, weighted, centroid, median, ward"
METHOD_HELP = ("Estimator: an attribution method stored in the space (the cosine of its maps) or "
               "a registered estimator NAME[:METHOD], with map-comparison options "
               "(METHOD+abs+s2+g16+rank+hub, see the README), or combine:EST=W,EST=W; "
               "`onnxattr estimators` lists them.")

Space = Annotated[Path | None, typer.Option("--space", "-s", help="Model space (HDF5).")]
Method = Annotated[str | None, typer.Option(
    "--method", "-m", help=METHOD_HELP + " Default: the default estimator (with --space).")]
Methods = Annotated[list[str] | None, typer.Option(
    "--method", "-m", help=METHOD_HELP + " Repeat; default: every estimator of the space.")]
AffCsv = Annotated[Path | None, typer.Option("--affinity", help="Labelled affinity CSV.")]
DistCsv = Annotated[Path | None, typer.Option("--distance", help="Labelled distance CSV.")]
Lam = Annotated[float, typer.Option("--lam", help="DEPARA weight of the relation-graph term.")]
Params = Annotated[list[str] | None, typer.Option(
    "--param", "-p", help="Estimator parameter NAME=VALUE (repeat); each estimator takes those it "
    "declares (`onnxattr estimators` lists them).")]
NoCache = Annotated[bool, typer.Option("--no-cache",
                                       help="Neither read nor update the space's cache.")]
MemoryMb = Annotated[int, typer.Option("--memory-mb", min=1, help="Approximate memory budget.")]
NameMap = Annotated[list[str] | None, typer.Option(
    "--map", help="Rename a matrix name to the oracle's: OLD=NEW (repeat).")]
NameMapFile = Annotated[Path | None, typer.Option(
    "--map-file", help="JSON object of matrix name -> oracle name.")]
Top = Annotated[int, typer.Option("--top", help="Relevant = the oracle's top-N sources.")]
Family = Annotated[list[str] | None, typer.Option(
    "--family", help="Rank families, not models: NAME=FAMILY (oracle names; repeat). Each "
    "family counts once, by its best member.")]
FamilyFile = Annotated[Path | None, typer.Option(
    "--family-file", help="JSON object of oracle name -> family (e.g. its task).")]
Linkage = Annotated[str, typer.Option("--linkage", help=f"One of {LINKAGES}.")]
Bootstrap = Annotated[int, typer.Option(
    "--bootstrap", help="Probe resamples for intervals (0 = none; needs --space).")]


def _params(items: list[str] | None, lam: float) -> dict[str, Any]:
    """``--param NAME=VALUE`` items (and --lam) as estimator parameters, typed like their defaults."""
    from ..analysis.estimators import list_estimators

    defaults = {p: d for reg in list_estimators() for p, d in reg.params.items()}
    out: dict[str, Any] = {"lam": lam} if "lam" in defaults else {}
    for item in items or []:
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or key not in defaults:
            raise OnnxAttrError(f"--param {item!r}: give NAME=VALUE with NAME one of "
                                f"{', '.join(defaults) or '(none)'}")
        kind = type(defaults[key])
        try:
            if kind is bool:
                out[key] = {"true": True, "1": True, "false": False, "0": False}[text.lower()]
            else:
                out[key] = kind(text) if kind in (int, float) else text
        except (KeyError, ValueError):
            raise OnnxAttrError(f"--param {key}={text!r}: expected a {kind.__name__}") from None
    return out


def _file_stem(label: str) -> str:
    return label.replace(":", "_").replace("@", "_lam")


def _matrix(space: Path | None, method: str | None, affinity: Path | None,
            distance: Path | None, params: dict[str, Any], no_cache: bool = False
            ) -> LabelledMatrix:
    """The one matrix a command works on: from the space, or from a labelled CSV."""
    from .. import read_matrix_csv
    from ..api import affinity as space_affinity

    _matrix_inputs(space, affinity, distance)
    if affinity is not None:
        return read_matrix_csv(affinity, "affinity")
    if distance is not None:
        return read_matrix_csv(distance, "distance")
    assert space is not None
    return space_affinity(space, _method(space, method), use_cache=not no_cache, progress=True,
                          **params)


def _source(space: Path | None, method: str | None, affinity: Path | None,
            distance: Path | None) -> tuple[Path | LabelledMatrix, str | None]:
    """What `tree`/`heatmap` hand the API: a labelled CSV's matrix (cheap), or the space and
    estimator, whose matrix the API computes only once its own options checked out."""
    if space is None:
        return _matrix(space, method, affinity, distance, {}), None
    _matrix_inputs(space, affinity, distance)
    return space, _method(space, method)


def _matrix_inputs(space: Path | None, affinity: Path | None, distance: Path | None) -> None:
    if sum(x is not None for x in (space, affinity, distance)) != 1:
        raise OnnxAttrError("give exactly one of --space (with --method, or none for the default "
                            "estimator), --affinity or --distance")


def _method(space: Path, method: str | None) -> str:
    """-m as given, else the default estimator (an error naming the space's estimators where
    the space lacks what it reads)."""
    from ..api import default_estimator

    return method or default_estimator(space)


@command(name="estimators", panel=PANEL_ANALYSE)
def estimators_cmd(
    space: Annotated[Path | None, typer.Option(
        "--space", "-s", help="Also say which estimators this space has data for.")] = None,
) -> None:
    """Registered estimators: name, data they read, parameters (default) and description."""
    from ..analysis.estimators import DEFAULT_MAP_ESTIMATOR, available_estimators, list_estimators

    registered = list_estimators()
    usable = available_estimators(space) if space is not None else None
    table = Table(title="estimators (NAME[:METHOD] for those reading maps)")
    for col in ("name", "reads", "parameters", "description", *(["on space"] if usable else [])):
        table.add_column(col)
    for reg in registered:
        params = ", ".join(f"{k}={v!r}" for k, v in reg.params.items()) or "-"
        row = [reg.name + (":METHOD" if reg.needs_maps else ""), reg.kind, params, reg.description]
        if usable is not None:
            if reg.name == DEFAULT_MAP_ESTIMATOR:
                mine = [u for u in usable if u not in {r.name for r in registered}]
            else:
                mine = [reg.name] if reg.name in usable else []
            row.append(", ".join(mine) or "-")
        table.add_row(*row)
    console.print(table)
    console.print(f"A bare attribution-method name (elrp, ...) means {DEFAULT_MAP_ESTIMATOR}:METHOD; "
                  "map options and corrections follow with '+' (elrp+abs+g16+hub).",
                  highlight=False)


@command(panel=PANEL_ANALYSE)
def distance(
    space: Annotated[Path, typer.Option("--space", "-s", help="Model space (HDF5).")],
    method: Method = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("."),
    fmt: Annotated[list[str] | None, typer.Option(
        "--format", "-f", help="csv (default), npy, json; repeat for several.")] = None,
    models: Annotated[str | None, typer.Option(
        "--models", help="Comma-separated subset of models.")] = None,
    lam: Lam = 1.0,
    param: Params = None,
    no_cache: NoCache = False,
    memory_mb: MemoryMb = 1024,
) -> None:
    """Affinity (mean per-image cosine) and distance (Np / sum cos) matrices, labelled."""
    from .. import write_matrix
    from ..analysis.estimators import compute_affinity

    if out.exists() and not out.is_dir():
        raise OnnxAttrError(f"--out {out} is a file; give a folder for the matrices")
    formats = list(dict.fromkeys(fmt or ["csv"]))
    for f in formats:
        if f not in ("csv", "npy", "json"):
            raise OnnxAttrError(f"unknown format {f!r}; use csv, npy or json")
    subset = [m.strip() for m in models.split(",") if m.strip()] if models else None
    aff, stats = compute_affinity(space, _method(space, method), subset, use_cache=not no_cache, **_params(param, lam),
                                  memory_bytes=memory_mb << 20, progress=True)
    stem = _file_stem(aff.estimator)
    written = []
    kinds = [("affinity", aff)] + ([("distance", aff.distance())] if aff.has_distance else [])
    for kind, mat in kinds:
        for f in formats:
            written.append(write_matrix(mat, out / f"{stem}_{kind}.{f}"))
    if "npy" in formats:  # an .npy has no labels: write them next to it
        names = out / f"{stem}_names.json"
        names.write_text(json.dumps(aff.names))
        written.append(names)
    console.print(f"{aff.estimator}: {len(aff.names)} models, {stats['computed_pairs']} pairs "
                  f"computed, {stats['cached_models']} models from the cache")
    if aff.excluded:
        console.print(f"without data for {aff.estimator}: {', '.join(aff.excluded)}")
    if not aff.has_distance:
        console.print(f"no distance file: {aff.estimator}'s affinities are z-scores or centred, "
                      "and d = 1/a applies to similarities such as cosines")
    for w in written:
        console.print(f"wrote {w}")


@command(panel=PANEL_ANALYSE)
def rank(
    target: Annotated[str, typer.Argument(help="Target model name.")],
    space: Space = None,
    method: Method = None,
    affinity: AffCsv = None,
    distance: DistCsv = None,
    top: Annotated[int, typer.Option("--top", "-k", help="Show the K closest (0 = all).")] = 0,
    bootstrap: Annotated[int | None, typer.Option(
        "--bootstrap", help="Probe resamples for intervals and ≈ marks (0 = none); default: 20 "
        "in a space of at most 8 models, where that takes seconds, else none.")] = None,
    compare: Annotated[list[str] | None, typer.Option(
        "--compare", "-c", help="Also rank with this estimator (repeat) and say whether they "
        "disagree on TARGET; default: the default estimator and the paper's saliency, "
        "grad_input and elrp, those with data in the space.")] = None,
    lam: Lam = 1.0,
    param: Params = None,
    no_cache: NoCache = False,
) -> None:
    """Source models for TARGET, closest first, with their distances and how sure each rank is
    (probe bootstrap: 95% interval of the affinity and of the rank; ≈ where a source cannot be
    told apart from the one above; disjoint-halves agreement), and whether the estimators
    disagree on TARGET. Resampling is the slow part (the default estimator, 20 draws: 2–5 s of
    CPU on the 6-model quick demo, 30–45 s on the 18-model full one), so without --bootstrap
    it runs only in spaces of at most 8 models."""
    from ..analysis.confidence import AUTO_BOOTSTRAP, AUTO_MAX_MODELS, auto_bootstrap, source_ties
    from ..api import models
    from ..api import rank as rank_sources

    if space is not None and target not in (names := models(space)):
        raise OnnxAttrError(f"no model {target!r} in {space}; models: {', '.join(names) or 'none'}")
    method = _method(space, method) if space is not None else method
    mat = _matrix(space, method, affinity, distance, _params(param, lam), no_cache)
    asked = bootstrap is not None
    bootstrap = bootstrap if asked else auto_bootstrap(len(mat.names)) if space is not None else 0
    stab = None
    if space is not None and bootstrap != 0:
        from ..api import stability

        stab = stability(space, method, bootstrap=bootstrap, **_params(param, lam))
    ties = source_ties(stab) if stab is not None else None
    level = {n: t for n, _, t in ties.ranked(target)} if ties is not None else {}
    table = Table(title=f"closest sources for {target} ({mat.estimator})")
    with_distance = mat.has_distance
    cols = ["rank", "source", *(["distance"] if with_distance else []), "affinity"]
    if stab is not None:
        cols += ["affinity 95%", "rank 95%", "≈"]
    for col in cols:
        table.add_column(col, justify="left" if col == "source" else "right")
    i = mat.index(target)
    for r, nb in enumerate(rank_sources(mat, target, top=top), 1):
        j = mat.index(nb.name)
        cells = [str(r), nb.name, *([f"{nb.distance:.4g}"] if with_distance else []),
                 f"{nb.affinity:.4g}"]
        if stab is not None:
            lo, hi = int(stab.rank_low[i, j]), int(math.ceil(stab.rank_high[i, j]))
            cells += [f"{stab.low[i, j]:.4g}..{stab.high[i, j]:.4g}",
                      str(lo) if lo == hi else f"{lo}..{hi}", "≈" if level[nb.name] else ""]
        table.add_row(*cells)
    console.print(table)
    if ties is not None:
        console.print(ties.legend())
    elif space is not None:
        console.print("no ≈ marks: telling sources apart needs probe resamples"
                      + ("" if asked else f", left out by default above {AUTO_MAX_MODELS} models"
                         " (they take tens of seconds)")
                      + f"; add --bootstrap {AUTO_BOOTSTRAP}")
    if space is not None:
        _print_agreement(target, [mat, *_compared(space, mat.estimator, compare,
                                                         _params(param, lam), no_cache)])
    if stab is not None:
        console.print(f"probe resampling ({stab.resampling}): "
                      f"the top source stays first in {stab.top1_kept[i]:.0%} of draws; two "
                      f"disjoint halves of the probe set rank the sources alike at ρ = "
                      f"{stab.halves_rho[i]:.2f}")
        note = stab.note()
        if note:
            console.print(note)


def _compared(space: Path, method: str, compare: list[str] | None, params: dict[str, Any],
              no_cache: bool) -> list[LabelledMatrix]:
    """The matrices `rank --compare` checks ``method`` against (default:
    :func:`~onnxattr.analysis.confidence.comparison_estimators` of the space), ``method`` left
    out. A default one that fails is left out with a line saying why: the ranking asked for
    stands without it; a named one that fails is an error."""
    from ..analysis.confidence import comparison_estimators
    from ..api import affinity, estimators

    names = compare or comparison_estimators(estimators(space))
    out = []
    for n in dict.fromkeys(names):
        if n == method:
            continue
        try:
            out.append(affinity(space, n, use_cache=not no_cache, **params))
        except Exception as exc:  # noqa: BLE001 - reported, and only for estimators not asked for
            if compare:
                raise
            console.print(f"not compared with {n}: {type(exc).__name__}: {exc}")
    return out


def _print_agreement(target: str, matrices: list[LabelledMatrix]) -> None:
    """The ≠ line of `rank`: whether the estimators of ``matrices`` disagree on ``target``."""
    from ..analysis.confidence import disagreement

    ranked = [m for m in matrices if target in m.names]
    if len(ranked) > 1:
        console.print(disagreement(ranked, target).line())


@command(name="evaluate", panel=PANEL_ANALYSE)
def evaluate_cmd(
    oracle: Annotated[Path, typer.Option(
        "--oracle", help="Measured transfers CSV: target rows x source columns.")],
    space: Space = None,
    method: Methods = None,
    affinity: Annotated[list[Path] | None, typer.Option(
        "--affinity", help="Labelled affinity CSV (repeat).")] = None,
    distance: Annotated[list[Path] | None, typer.Option(
        "--distance", help="Labelled distance CSV (repeat).")] = None,
    mapping: NameMap = None,
    map_file: NameMapFile = None,
    top: Top = 5,
    family: Family = None,
    family_file: FamilyFile = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write curves (JSON).")] = None,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Draw the P@K and R@K curves (.png/.svg).")] = None,
    bootstrap: Bootstrap = 0,
    lam: Lam = 1.0,
    param: Params = None,
    no_cache: NoCache = False,
) -> None:
    """P@K, R@K (K = 1..N-1), random/oracle curves and mean Spearman against an oracle;
    with --bootstrap, 95% intervals of P@1/3/5 and Spearman over probe resamples."""
    from .. import api, read_matrix_csv, read_oracle
    from ..analysis import plots
    from ..analysis.evaluation import evaluations_json, parse_mapping

    if plot is not None:
        plots.check_image_path(plot)
    orc = read_oracle(oracle)
    names_map = parse_mapping(mapping or [], map_file)
    families = parse_mapping(family or [], family_file, form=("oracle_name", "family")) or None
    mats = [read_matrix_csv(p, "affinity") for p in affinity or []]
    mats += [read_matrix_csv(p, "distance") for p in distance or []]
    space_names = (method or api.estimators(space)) if space is not None else []
    if method and space is None:
        raise OnnxAttrError("--method needs --space")
    if bootstrap and space is None:
        raise OnnxAttrError("--bootstrap needs --space (probe resamples are computed from it)")
    if not mats and not space_names:
        raise OnnxAttrError("nothing to evaluate; give --space, --affinity or --distance")
    evals = api.evaluate(mats, orc, top=top, mapping=names_map, families=families)
    if space_names:
        evals += api.evaluate(space, orc, space_names, top=top, mapping=names_map,
                              families=families, use_cache=not no_cache, progress=True,
                              **_params(param, lam))
    cis = {}
    if bootstrap:
        from ..analysis.stability import evaluation_ci

        for m, e in zip(space_names, evals[len(evals) - len(space_names):], strict=True):
            stab = api.stability(space, m, bootstrap=bootstrap, **_params(param, lam))
            cis[e.estimator] = evaluation_ci(stab, orc, top, mapping=names_map, families=families)
    ref = evals[0]
    unit = f"top-{top} families" if families else f"top-{top}"
    console.print(_summary_table(evals, cis, bootstrap, f"{oracle.name} (relevant = {unit})"))
    console.print("ρ = mean per-target Spearman correlation of estimate vs oracle; P@K and R@K for "
                  "every K: --json, --plot")
    for e in evals:
        if e.ignored:
            console.print(f"{e.estimator}: not in the oracle, ignored: {', '.join(e.ignored)}")
    if ref.left_out:
        console.print(f"oracle restricted to the {len(orc.names) - len(ref.left_out)} models present; left out "
                      f"(not in the matrix, see --map): {', '.join(ref.left_out)}")
    for note in dict.fromkeys(n for e in evals for n in e.warnings):
        warn(note)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        data = evaluations_json(evals)
        for e in evals:
            if e.estimator in cis:
                flat = data if len(evals) == 1 else data["estimators"][e.estimator]
                flat["probe_bootstrap"] = cis[e.estimator].to_dict()
        json_out.write_text(json.dumps(data, indent=1))
        console.print(f"wrote {json_out}")
    if plot is not None:
        plots.save(plots.curves_figure(evals), plot)
        console.print(f"wrote {plot}")


def _summary_table(evals: list, cis: dict, n_boot: int, against: str) -> Table:
    """One row per estimator (P@1/3/5, Spearman; 95% probe-resample intervals when computed),
    then the expected random and the oracle's own rows: readable at 80 columns for any number of
    estimators, where a column per estimator and K is not."""
    title = f"Against {against}"
    if cis:
        title += f"; 95% intervals over {n_boot} probe resamples"
    table = Table(title=title)
    table.add_column("estimator", justify="left", overflow="fold")
    for c in ("P@1", "P@3", "P@5", "Spearman"):
        table.add_column(c, justify="right", overflow="fold")

    def at(curve: Sequence[float], k: int) -> str:
        return f"{curve[k - 1]:.3f}" if k <= len(curve) else "–"

    for e in evals:
        ci = cis.get(e.estimator)
        cells = []
        for k in (1, 3, 5):
            v = at(e.precision, k)
            if ci is not None and k in ci.precision:
                lo, hi = ci.precision[k]
                v += f"\n[{lo:.2f}, {hi:.2f}]"
            cells.append(v)
        rho = f"{e.spearman:.3f}"
        if ci is not None:
            rho += f"\n[{ci.spearman[0]:.2f}, {ci.spearman[1]:.2f}]"
        table.add_row(e.estimator, *cells, rho)
    ref = evals[0]
    table.add_row("random (expected)", *(at(ref.random_precision, k) for k in (1, 3, 5)), "0",
                  style="dim")
    table.add_row("oracle", *(at(ref.oracle_precision, k) for k in (1, 3, 5)), "1", style="dim")
    return table


@command(panel=PANEL_ANALYSE)
def tree(
    space: Space = None,
    method: Method = None,
    affinity: AffCsv = None,
    distance: DistCsv = None,
    linkage: Linkage = "single",
    on: Annotated[str, typer.Option("--on", help="rows: Euclidean between affinity rows "
                                    "(original implementation); matrix: max(A) - A.")] = "rows",
    out: Annotated[Path, typer.Option("--out", "-o", help="Dendrogram .png/.svg.")] = Path(
        "tree.png"),
    newick: Annotated[Path | None, typer.Option(
        "--newick", help="Newick file (default: OUT with .nwk).")] = None,
    lam: Lam = 1.0,
    param: Params = None,
    no_cache: NoCache = False,
) -> None:
    """Agglomerative similarity tree: dendrogram image and Newick text."""
    from ..api import tree as similarity_tree

    source, est = _source(space, method, affinity, distance)
    result = similarity_tree(source, est, linkage=linkage, on=on, out=out,
                             use_cache=not no_cache, progress=True, **_params(param, lam))
    nwk = newick or out.with_suffix(".nwk")
    nwk.write_text(result.newick + "\n")
    console.print(result.newick, highlight=False, soft_wrap=True)
    console.print(f"wrote {out} and {nwk}")


@command(panel=PANEL_ANALYSE)
def heatmap(
    space: Space = None,
    method: Method = None,
    affinity: AffCsv = None,
    distance: DistCsv = None,
    linkage: Linkage = "single",
    out: Annotated[Path, typer.Option("--out", "-o", help="Image .png/.svg.")] = Path(
        "heatmap.png"),
    lam: Lam = 1.0,
    param: Params = None,
    no_cache: NoCache = False,
) -> None:
    """Affinity matrix as a heatmap, rows and columns ordered by the similarity tree."""
    from ..api import heatmap as draw_heatmap

    source, est = _source(space, method, affinity, distance)
    draw_heatmap(source, out, est, linkage=linkage, use_cache=not no_cache, progress=True,
                 **_params(param, lam))
    console.print(f"wrote {out}")


@command(panel=PANEL_ANALYSE)
def report(
    space: Annotated[Path, typer.Option("--space", "-s", help="Model space (HDF5).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="HTML file.")] = Path("report.html"),
    oracle: Annotated[Path | None, typer.Option(
        "--oracle", help="Measured transfers CSV, to evaluate every estimator.")] = None,
    method: Methods = None,
    mapping: NameMap = None,
    map_file: NameMapFile = None,
    top: Top = 5,
    linkage: Linkage = "single",
    bootstrap: Bootstrap = 20,
    lam: Lam = 1.0,
    param: Params = None,
    no_cache: NoCache = False,
) -> None:
    """One self-contained HTML page: models, example maps, and per estimator heatmaps, trees,
    rankings and their stability under probe resampling (and the evaluation)."""
    from ..analysis.evaluation import parse_mapping
    from ..api import report as write_report

    path = write_report(space, out, oracle, method or None,
                        mapping=parse_mapping(mapping or [], map_file), top=top,
                        linkage=linkage, use_cache=not no_cache, **_params(param, lam),
                        bootstrap=bootstrap, progress=True)
    console.print(f"wrote {path}")
