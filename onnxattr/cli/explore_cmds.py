"""CLI for the interactive explorer: `onnxattr explore SPACE`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._app import PANEL_ANALYSE, command, console
from .analysis_cmds import (
    Bootstrap,
    Lam,
    Linkage,
    Methods,
    NameMap,
    NameMapFile,
    NoCache,
    Params,
    Top,
    _params,
)


@command(panel=PANEL_ANALYSE)
def explore(
    space: Annotated[Path, typer.Argument(help="Model space (HDF5).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="HTML file.")] = Path("explorer.html"),
    oracle: Annotated[Path | None, typer.Option(
        "--oracle", help="Measured transfers CSV, shown beside each predicted ranking.")] = None,
    method: Methods = None,
    mapping: NameMap = None,
    map_file: NameMapFile = None,
    top: Top = 5,
    top_k: Annotated[int, typer.Option(
        "--top-k", min=1, help="Ranked sources kept per target and estimator.")] = 50,
    images: Annotated[int, typer.Option(
        "--images", min=1, help="Probe images whose maps the page compares.")] = 4,
    linkage: Linkage = "single",
    bootstrap: Bootstrap = 20,
    lam: Lam = 1.0,
    param: Params = None,
    no_cache: NoCache = False,
) -> None:
    """One self-contained HTML page to explore the space: pick a target, read its ranked sources
    per estimator (with probe-resampling intervals), compare two models' maps, browse the tree
    and heatmap; opens from disk, no server."""
    from ..analysis.evaluation import parse_mapping
    from ..api import explore as write_explorer

    res = write_explorer(space, out, oracle, method or None,
                         mapping=parse_mapping(mapping or [], map_file), top=top, top_k=top_k,
                         n_images=images, linkage=linkage, bootstrap=bootstrap,
                         use_cache=not no_cache, progress=True, **_params(param, lam))
    console.print(f"wrote {res.path} ({res.size_bytes / 1e6:.2f} MB: {res.n_models} models, "
                  f"{len(res.estimators)} estimators)")
