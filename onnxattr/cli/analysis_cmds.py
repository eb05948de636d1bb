"""CLI for the distance/evaluation stage: distance, rank, evaluate, tree, heatmap, report."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from .. import plots, trees
from ..distances import LabelledMatrix, ranking, read_matrix_csv, write_matrix
from ..errors import OnnxAttrError
from ..estimators import available_estimators, compute_affinity
from ..evaluation import evaluate, evaluations_json, parse_mapping, read_oracle
from ..report import write_report
from ._app import command, console

SpaceOpt = typer.Option(None, "--space", "-s", help="Model space (HDF5).")
MethodHelp = ("Estimator: an attribution method in the space (saliency, grad_input, elrp, ...) or "
              "svcca, cka, rsa, relation, depara[:METHOD].")
LamOpt = typer.Option(1.0, "--lam", help="DEPARA weight of the relation-graph term.")
NoCacheOpt = typer.Option(False, "--no-cache", help="Do not read or update the space's cache.")
MemOpt = typer.Option(1024, "--memory-mb", help="Approximate memory budget for the computation.")
MapOpt = typer.Option(None, "--map", help="Rename a matrix name to the oracle's: OLD=NEW (repeat).")
MapFileOpt = typer.Option(None, "--map-file", help="JSON object of matrix name -> oracle name.")


def _file_stem(label: str) -> str:
    return label.replace(":", "_").replace("@", "_lam")


def _matrix(space: Path | None, method: str | None, affinity: Path | None,
            distance: Path | None, lam: float = 1.0, no_cache: bool = False,
            memory_mb: int = 1024) -> LabelledMatrix:
    """The one matrix a command works on: from the space, or from a labelled CSV."""
    given = [x is not None for x in (space, affinity, distance)]
    if sum(given) != 1:
        raise OnnxAttrError("give exactly one of --space (with --method), --affinity or --distance")
    if affinity is not None:
        return read_matrix_csv(affinity, "affinity")
    if distance is not None:
        return read_matrix_csv(distance, "distance")
    if method is None:
        raise OnnxAttrError(f"--method is required with --space; available: "
                            f"{', '.join(available_estimators(space))}")
    matrix, _ = compute_affinity(space, method, lam=lam, use_cache=not no_cache,
                                 memory_bytes=memory_mb << 20, progress=True)
    return matrix


@command()
def distance(
    space: Path = typer.Option(..., "--space", "-s", help="Model space (HDF5)."),
    method: str = typer.Option(..., "--method", "-m", help=MethodHelp),
    out: Path = typer.Option(Path("."), "--out", "-o", help="Output folder."),
    fmt: list[str] = typer.Option(["csv"], "--format", "-f", help="csv, npy, json (repeat)."),
    models: str = typer.Option(None, "--models", help="Comma-separated subset of models."),
    lam: float = LamOpt,
    no_cache: bool = NoCacheOpt,
    memory_mb: int = MemOpt,
) -> None:
    """Affinity (mean per-image cosine) and distance (Np / sum cos) matrices, labelled."""
    for f in fmt:
        if f not in ("csv", "npy", "json"):
            raise OnnxAttrError(f"unknown format {f!r}; use csv, npy or json")
    subset = [m.strip() for m in models.split(",") if m.strip()] if models else None
    aff, stats = compute_affinity(space, method, subset, lam=lam, use_cache=not no_cache,
                                  memory_bytes=memory_mb << 20, progress=True)
    written = []
    for kind, mat in (("affinity", aff), ("distance", aff.distance())):
        for f in dict.fromkeys(fmt):
            written.append(write_matrix(mat, out / f"{_file_stem(aff.estimator)}_{kind}.{f}"))
            if f == "npy":  # an .npy has no labels: write them next to it
                names = out / f"{_file_stem(aff.estimator)}_names.json"
                names.write_text(json.dumps(aff.names))
    console.print(f"{aff.estimator}: {len(aff.names)} models, {stats['computed_pairs']} pairs "
                  f"computed, {stats['cached_models']} models from the cache")
    if aff.excluded:
        console.print(f"without data for {aff.estimator}: {', '.join(aff.excluded)}")
    for w in dict.fromkeys(written):
        console.print(f"wrote {w}")


@command()
def rank(
    target: str = typer.Argument(..., help="Target model name."),
    space: Path = SpaceOpt,
    method: str = typer.Option(None, "--method", "-m", help=MethodHelp),
    affinity: Path = typer.Option(None, "--affinity", help="Labelled affinity CSV."),
    distance: Path = typer.Option(None, "--distance", help="Labelled distance CSV."),
    top: int = typer.Option(0, "--top", "-k", help="Show only the K closest (0 = all)."),
    lam: float = LamOpt,
    no_cache: bool = NoCacheOpt,
) -> None:
    """Source models for TARGET, closest first, with their distances."""
    mat = _matrix(space, method, affinity, distance, lam, no_cache)
    aff, dist = mat.affinity(), mat.distance()
    rows = ranking(mat, target)
    rows = rows[:top] if top > 0 else rows
    table = Table(title=f"closest sources for {target} ({mat.estimator})")
    for col in ("rank", "source", "distance", "affinity"):
        table.add_column(col, justify="left" if col == "source" else "right")
    i = mat.index(target)
    for r, (name, _) in enumerate(rows, 1):
        j = mat.index(name)
        table.add_row(str(r), name, f"{dist.values[i, j]:.4g}", f"{aff.values[i, j]:.4g}")
    console.print(table)


@command(name="evaluate")
def evaluate_cmd(
    oracle: Path = typer.Option(..., "--oracle", help="Measured transfers CSV (targets x sources)."),
    space: Path = SpaceOpt,
    method: list[str] = typer.Option(None, "--method", "-m",
                                     help=MethodHelp + " Repeat; default: all in the space."),
    affinity: list[Path] = typer.Option(None, "--affinity", help="Labelled affinity CSV (repeat)."),
    distance: list[Path] = typer.Option(None, "--distance", help="Labelled distance CSV (repeat)."),
    mapping: list[str] = MapOpt,
    map_file: Path = MapFileOpt,
    top: int = typer.Option(5, "--top", help="Relevant set = oracle's top-N sources per target."),
    json_out: Path = typer.Option(None, "--json", help="Write the curves as JSON."),
    plot: Path = typer.Option(None, "--plot", help="Draw P@K and R@K curves (PNG/SVG)."),
    lam: float = LamOpt,
    no_cache: bool = NoCacheOpt,
) -> None:
    """P@K, R@K (K = 1..N-1), random/oracle curves and mean Spearman against an oracle."""
    orc = read_oracle(oracle)
    names_map = parse_mapping(mapping or [], map_file)
    mats: list[LabelledMatrix] = [read_matrix_csv(p, "affinity") for p in affinity or []]
    mats += [read_matrix_csv(p, "distance") for p in distance or []]
    if space is not None:
        for m in method or available_estimators(space):
            mats.append(compute_affinity(space, m, lam=lam, use_cache=not no_cache,
                                         progress=True)[0])
    elif method:
        raise OnnxAttrError("--method needs --space")
    if not mats:
        raise OnnxAttrError("nothing to evaluate; give --space, --affinity or --distance")
    evals = [evaluate(m, orc, top=top, mapping=names_map) for m in mats]
    ref = evals[0]
    table = Table(title=f"P@K / R@K against {oracle.name} (relevant = top-{top})")
    table.add_column("K", justify="right")
    for e in evals:
        table.add_column(f"{e.estimator} P", justify="right")
        table.add_column(f"{e.estimator} R", justify="right")
    table.add_column("random P", justify="right")
    table.add_column("oracle P", justify="right")
    for i, k in enumerate(ref.k):
        cells = [f"{v:.3f}" for e in evals for v in (e.precision[i], e.recall[i])]
        table.add_row(str(k), *cells, f"{ref.random_precision[i]:.3f}",
                      f"{ref.oracle_precision[i]:.3f}")
    table.add_row("ρ", *[c for e in evals for c in (f"{e.spearman:.3f}", "")], "", "")
    console.print(table)
    console.print("ρ = mean per-target Spearman correlation of estimate vs oracle")
    for e in evals:
        if e.ignored:
            console.print(f"{e.estimator}: not in the oracle, ignored: {', '.join(e.ignored)}")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(evaluations_json(evals), indent=1))
        console.print(f"wrote {json_out}")
    if plot is not None:
        plots.save(plots.curves_figure(evals), plot)
        console.print(f"wrote {plot}")



@command()
def tree(
    space: Path = SpaceOpt,
    method: str = typer.Option(None, "--method", "-m", help=MethodHelp),
    affinity: Path = typer.Option(None, "--affinity", help="Labelled affinity CSV."),
    distance: Path = typer.Option(None, "--distance", help="Labelled distance CSV."),
    linkage: str = typer.Option(trees.DEFAULT_LINKAGE, "--linkage",
                                help=f"One of {', '.join(trees.LINKAGES)}."),
    on: str = typer.Option("rows", "--on", help="rows: Euclidean between affinity rows "
                           "(original implementation); matrix: max(A) - A directly."),
    out: Path = typer.Option(Path("tree.png"), "--out", "-o", help="Dendrogram (.png or .svg)."),
    newick: Path = typer.Option(None, "--newick", help="Newick file (default: OUT with .nwk)."),
    lam: float = LamOpt,
    no_cache: bool = NoCacheOpt,
) -> None:
    """Agglomerative similarity tree: dendrogram image and Newick text."""
    mat = _matrix(space, method, affinity, distance, lam, no_cache)
    z = trees.linkage(mat, linkage, on)
    plots.save(plots.dendrogram_figure(z, mat.names, f"{mat.estimator} ({linkage})"), out)
    nwk = newick or out.with_suffix(".nwk")
    text = trees.to_newick(z, mat.names)
    nwk.write_text(text + "\n")
    console.print(text, highlight=False)
    console.print(f"wrote {out} and {nwk}")


@command()
def heatmap(
    space: Path = SpaceOpt,
    method: str = typer.Option(None, "--method", "-m", help=MethodHelp),
    affinity: Path = typer.Option(None, "--affinity", help="Labelled affinity CSV."),
    distance: Path = typer.Option(None, "--distance", help="Labelled distance CSV."),
    linkage: str = typer.Option(trees.DEFAULT_LINKAGE, "--linkage", help="Tree for the order."),
    out: Path = typer.Option(Path("heatmap.png"), "--out", "-o", help="Image (.png or .svg)."),
    lam: float = LamOpt,
    no_cache: bool = NoCacheOpt,
) -> None:
    """Affinity matrix as a heatmap, rows and columns ordered by the similarity tree."""
    mat = _matrix(space, method, affinity, distance, lam, no_cache).affinity()
    order = trees.leaf_order(trees.linkage(mat, linkage))
    plots.save(plots.heatmap_figure(mat, order), out)
    console.print(f"wrote {out}")


@command()
def report(
    space: Path = typer.Option(..., "--space", "-s", help="Model space (HDF5)."),
    out: Path = typer.Option(Path("report.html"), "--out", "-o", help="HTML file to write."),
    oracle: Path = typer.Option(None, "--oracle", help="Measured transfers CSV, to evaluate."),
    method: list[str] = typer.Option(None, "--method", "-m",
                                     help=MethodHelp + " Repeat; default: all in the space."),
    mapping: list[str] = MapOpt,
    map_file: Path = MapFileOpt,
    top: int = typer.Option(5, "--top", help="Relevant set = oracle's top-N sources per target."),
    linkage: str = typer.Option(trees.DEFAULT_LINKAGE, "--linkage", help="Tree linkage."),
    lam: float = LamOpt,
    no_cache: bool = NoCacheOpt,
) -> None:
    """One self-contained HTML page: heatmaps, trees, rankings (and evaluation) per estimator."""
    path = write_report(space, out, oracle, method or None,
                        mapping=parse_mapping(mapping or [], map_file), top=top,
                        linkage=linkage, lam=lam, use_cache=not no_cache, progress=True)
    console.print(f"wrote {path}")
