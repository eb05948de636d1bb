"""CLI of measured transfer (`transfer`) and the mini-Taskonomy benchmark (`bench taskonomy-mini`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ._app import PANEL_ZOO, app, command, console

bench_app = typer.Typer(help="Bundled benchmarks with a measured oracle.", no_args_is_help=True)
app.add_typer(bench_app, name="bench", rich_help_panel=PANEL_ZOO)


def _say(msg: str) -> None:
    console.print(msg, highlight=False, markup=False)


@command(panel=PANEL_ZOO)
def transfer(
    data: Annotated[
        Path,
        typer.Argument(
            help="Labelled images: one subfolder per class, or images with a .npy label each "
            "(scalar/vector: image-level; HxW[xC]: dense). With --teacher: any images."
        ),
    ],
    space: Annotated[Path, typer.Option("--space", "-s", help="Model space (HDF5): the sources.")],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Transfer matrix CSV (targets x sources, higher = better); rows of "
            "other targets already in it are kept. Default: transfers.csv, or "
            "estimates.csv with --estimate (rows TARGET:ESTIMATE).",
        ),
    ] = None,
    json_out: Annotated[
        Path | None,
        typer.Option("--json", help="Raw scores and settings (default: OUT with .json)."),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="Target (row) name; default: the folder name. Name it after a model "
            "of the space to evaluate rankings for that model.",
        ),
    ] = None,
    teacher: Annotated[
        Path | None,
        typer.Option("--teacher", help="ONNX model whose outputs on the images are the labels."),
    ] = None,
    teacher_node: Annotated[
        str | None,
        typer.Option(
            "--teacher-node", help="Teacher node/tensor giving the labels (default: its output)."
        ),
    ] = None,
    teacher_preset: Annotated[
        str | None,
        typer.Option(
            "--teacher-preset", help="Preprocessing preset of the teacher (`add --preset`)."
        ),
    ] = None,
    size: Annotated[
        int | None,
        typer.Option(help="Images are centre-cropped to SxS (default: the space's probe size)."),
    ] = None,
    models: Annotated[
        str | None,
        typer.Option("--models", help="Comma-separated subset of sources (default: all)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the train/validation/test split.")] = 0,
    cache: Annotated[
        Path | None,
        typer.Option("--cache", help="Score cache folder (default: SPACE.transfer-cache)."),
    ] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Neither read nor write the cache.")
    ] = False,
    batch_size: Annotated[int, typer.Option(help="Images per onnxruntime batch.")] = 64,
    estimate: Annotated[
        str | None,
        typer.Option(
            "--estimate",
            help="Instead of fitting the head: score every source with label-based "
            "estimates (comma-separated: logme, leep, nce, hscore, sfda; "
            "docs/estimators.md). Seconds per source.",
        ),
    ] = None,
    bins: Annotated[
        int,
        typer.Option(help="--estimate: classes that regression targets are quantised into."),
    ] = 8,
    max_samples: Annotated[
        int,
        typer.Option(help="--estimate: labelled pixels sampled from dense targets, at most."),
    ] = 4000,
) -> None:
    """Measured transfer of every source in the space to one labelled target task (or, with
    --estimate, label-based estimates of it)."""
    from ..api import estimate_transfer, transfer_target
    from ..api import measure_transfer as measure
    from ..transfer.heads import METRICS
    from ..transfer.sources import check_batch_size, check_outputs, load_sources

    check_batch_size(batch_size)  # refused before any source or image is read
    check_outputs(out, json_out, "estimates" if estimate else "transfers")
    subset = [m.strip() for m in models.split(",") if m.strip()] if models else None
    sources = load_sources(space, subset)  # every source checked before any image is read
    target = transfer_target(space, data, name=name, teacher=teacher, teacher_node=teacher_node,
                             teacher_preset=teacher_preset, size=size, log=_say)
    _say(
        f"target {target.name!r}: {len(target.images)} images, {target.kind.replace('_', ' ')} "
        f"(label shape {list(target.y.shape[1:]) or 'scalar'}), metric: "
        f"{METRICS[target.kind]} (higher = better)"
    )
    if estimate is not None:
        res = estimate_transfer(space, target, [n.strip() for n in estimate.split(",") if n.strip()],
                                sources, out=out or Path("estimates.csv"), json_out=json_out,
                                bins=bins, max_samples=max_samples, seed=seed,
                                batch_size=batch_size, log=_say)
        for est in res.estimates:
            _say(f"{est} (higher = better):")
            for r, (s, v) in enumerate(res.ranked(est), 1):
                _say(f"{r:3d}. {s:30s} {v:.4f}")
    else:
        res = measure(space, target, sources, out=out or Path("transfers.csv"), json_out=json_out,
                      cache=cache, use_cache=not no_cache, seed=seed, batch_size=batch_size,
                      log=_say)
        ranked = sorted(res.sources, key=lambda s: -res.scores[(target.name, s)].score)
        for r, s in enumerate(ranked, 1):
            sc = res.scores[(target.name, s)]
            _say(f"{r:3d}. {s:30s} {sc.metric} {sc.score:.4f}  (validation {sc.val_score:.4f}, "
                 f"alpha {sc.alpha:g})")
    for p in res.written:
        _say(f"wrote {p}")


@command(target=bench_app, name="taskonomy-mini")
def taskonomy_mini(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("bench"),
    quick: Annotated[
        bool,
        typer.Option(
            help="Three tasks, few images, one epoch: an end-to-end check in about a minute."
        ),
    ] = False,
    committed: Annotated[
        bool,
        typer.Option(
            help="Start from the committed encoders (no training): space, oracle, evaluation."
        ),
    ] = False,
    world: Annotated[
        int,
        typer.Option(
            min=0,
            help="Seeds every scene set and initial weight. Committed: 0 (recipe 2) and 1-4 "
            "(recipe 3); any other number draws a fresh world.",
        ),
    ] = 0,
    recipe: Annotated[
        int,
        typer.Option(
            help="Training recipe: 3 standardises regression targets, 2 trains on raw ones "
            "(docs/benchmark.md). With --committed, the world's own recipe.",
        ),
    ] = 3,
) -> None:
    """Regenerate the mini-Taskonomy benchmark: scenes, encoders, space, measured oracle, and
    every estimator's P@K/Spearman against it (docs/benchmark.md)."""
    from ..api import bench
    from ..benchmark.scoring import table

    res = bench(out, quick=quick, committed=committed, world=world, recipe=recipe, log=_say)
    s = res.sanity
    _say(
        f"self-transfer first for {s['self_first']} of {s['n_targets']} targets; "
        f"seed stability (mean Spearman): {s['seed_spearman_mean']}"
    )
    for key, rows in res.estimators.items():
        _say(f"\nagainst {key}.csv\n{table(rows)}")
    _say(json.dumps({k: round(v, 1) for k, v in res.seconds.items()}))
    _say(f"wrote {out}/oracle.csv, oracle_full.csv, sanity.json, results.json, results.md")
