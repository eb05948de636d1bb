"""`onnxattr demo`: the README's main command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from ._app import command, console


@command(name="demo")
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the space, report and tables.")] = Path(
        "onnxattr-demo"
    ),
    models: Annotated[
        str | None, typer.Option(help="Comma-separated zoo names (default: all installed).")
    ] = None,
    n: Annotated[int, typer.Option("--n", help="Probe images (embedded default set).")] = 64,
    size: Annotated[int, typer.Option(help="Probe image size.")] = 224,
    methods: Annotated[
        str | None, typer.Option(help="Comma-separated methods (default: all registered).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Probe images per pass.")] = 16,
    device: Annotated[str, typer.Option(help="cpu | cuda | cuda:N | mps")] = "cpu",
) -> None:
    """Zoo models from several frameworks -> one model space -> report and nearest neighbours."""
    from ..demo import run_demo

    result = run_demo(
        out,
        models=models.split(",") if models else None,
        n=n,
        size=size,
        methods=methods.split(",") if methods else None,
        batch_size=batch_size,
        device=device,
        log=lambda m: console.print(m, highlight=False),
    )
    header, rows = result.neighbour_rows()
    table = Table(title="nearest neighbour (highest affinity) per method")
    for col in header:
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(
        f"space:  {result.space}\nreport: {result.report}\n"
        f"table:  {result.table}\n{len(result.models)} models in "
        f"{result.seconds / 60:.1f} min"
    )
    if result.failed:
        console.print(Text(f"{len(result.failed)} model(s) failed: ", style="red") + Text(", ".join(result.failed)))
        raise typer.Exit(1)


@command(name="taskonomy")
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
    from ..demo import reproduce_taskonomy

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
