"""`onnxattr rules`: the LRP rule table of a preset (with overrides), and the presets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._app import PANEL_BUILD, Table, command, console


@command(name="rules", panel=PANEL_BUILD)
def rules(
    preset: Annotated[
        str, typer.Option(help="Rule preset (the lrp method's `preset`).")
    ] = "epsilon",
    epsilon: Annotated[
        float | None, typer.Option(help="ε of the ε-rule (default: the preset's).")
    ] = None,
    overrides: Annotated[
        Path | None, typer.Option(help="TOML file of rule overrides (the lrp method's `rules`).")
    ] = None,
) -> None:
    """Print the LRP rule per ONNX op type of a preset, and the list of presets."""
    from ..attribution.rule_table import PRESETS, build_table
    from ..attribution.rules import RULES

    table = build_table(preset, epsilon, str(overrides) if overrides else None)
    groups: dict[str, list[str]] = {}
    for entry, rule in table.rows():  # one row per rule: op types sharing it listed together
        groups.setdefault(rule, []).append(entry + (" *" if entry in table.overridden else ""))
    out = Table(title=f"LRP rules: {table.origin}", show_lines=True)
    out.add_column("ONNX op types / entries")
    out.add_column("rule")
    for rule, entries in groups.items():
        out.add_row(", ".join(entries), rule)
    console.print(out)
    console.print(
        "first: linear op(s) nearest the input; input: element-wise ops with a constant before "
        "them; default: op types not listed. BatchNormalization after Conv/ConvTranspose/Gemm is "
        "merged into it first." + (" * overridden." if table.overridden else "")
    )
    legend = Table(title="rules")
    legend.add_column("rule")
    legend.add_column("what it does")
    for name in sorted({r.split("(", 1)[0] for r in groups}):
        legend.add_row(name, RULES[name].summary)
    console.print(legend)
    presets = Table(title="presets (--lrp-preset)")
    presets.add_column("name")
    presets.add_column("ε")
    presets.add_column("rules")
    for name, p in PRESETS.items():
        presets.add_row(
            name + (" (default)" if name == "epsilon" else ""), f"{p.epsilon:g}", p.summary
        )
    console.print(presets)
