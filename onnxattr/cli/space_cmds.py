"""Commands of the first stages: probe set, graph inspection, adding/listing/removing models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from ..api import DEFAULT_MEMORY_MB
from ._app import (
    PANEL_BUILD,
    PANEL_CHECK,
    Table,
    app,
    cli_terms,
    command,
    console,
    err_console,
    warn,
)

probe_app = typer.Typer(help="Build the probe set of a model space.", no_args_is_help=True)
app.add_typer(probe_app, name="probe", rich_help_panel=PANEL_BUILD)

SpaceOpt = Annotated[Path, typer.Option("--space", "-s", help="Model-space HDF5 file.")]


@command(target=probe_app, name="build")
def probe_build(
    folder: Annotated[
        Path | None, typer.Argument(help="Folder of images (recursive); none: embedded default.")
    ] = None,
    space: SpaceOpt = Path("space.h5"),
    size: Annotated[int, typer.Option(help="Probe images are S×S.")] = 224,
    n: Annotated[
        int | None, typer.Option("--n", help="Number of images (default: all; embedded: 300).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    replace: Annotated[
        bool, typer.Option(help="Replace an existing probe set (no models yet).")
    ] = False,
) -> None:
    """Sample, centre-crop and store the probe images once in the space."""
    import warnings

    from ..api import build_probe

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        probe = build_probe(folder, size=size, n=n, seed=seed, space=space, replace=replace,
                            progress=_track("reading images"))
    for w in caught:
        warn(str(w.message))
    console.print(f"{len(probe)} probe images of {size}×{size} from {probe.source} -> {space}")


@command(name="nodes", panel=PANEL_BUILD)
def nodes(
    model: Annotated[Path, typer.Argument(help="ONNX file.")],
    candidates: Annotated[
        bool, typer.Option("--candidates", help="Only the suggested encoder node (★).")
    ] = False,
    show_all: Annotated[
        bool,
        typer.Option("--all", help="Also Constant nodes and nodes computed from weights only."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON: one object per node.")] = False,
) -> None:
    """List the nodes: name, op type, output tensors and shapes; the suggested encoder node ★.

    The ★ (and its reason) comes from the graph's structure: pre-logits, a shared trunk, or an
    encoder-decoder's bottleneck (onnxattr.onnxgraph.candidates).

    Names are printed in full (they are what --encoder-node takes), however narrow the terminal.
    """
    from ..api import nodes as list_nodes

    infos = list_nodes(model)
    shown = [i for i in infos if (show_all or i.on_input_path) and (i.candidate or not candidates)]
    if as_json:
        rows = [{"name": i.name, "op_type": i.op_type, "outputs": i.outputs, "shapes": i.shapes,
                 "candidate": i.candidate, "on_input_path": i.on_input_path} for i in shown]
        typer.echo(json.dumps(rows, indent=1))
        return
    hidden = sum(not i.on_input_path for i in infos) if not show_all else 0
    title = f"{model.name}: {len(infos)} nodes" + (
        f" ({hidden} Constant / weight-only nodes hidden: --all shows them)" if hidden else "")
    header = ["", "node", "op", "outputs", "shape", "candidate"]
    rows = []
    for info in shown:
        shape = info.shapes[0] if info.shapes else None
        shape_s = "?" if shape is None else "×".join("?" if d is None else str(d) for d in shape)
        rows.append(["★" if info.candidate else "", info.name, info.op_type,
                     ", ".join(info.outputs), shape_s, info.candidate])
    # Plain aligned columns, never cut: the names are what --encoder-node takes, so they must be
    # copyable whole, whatever the terminal width (or none, when piped).
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    console.print(title)
    for r in [header, *rows]:
        console.print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip(), crop=False)


@command(name="add", panel=PANEL_BUILD)
def add(
    model: Annotated[
        Path, typer.Argument(help="ONNX file, or a manifest of models (.toml, .json, .csv).")
    ],
    encoder_node: Annotated[
        str | None,
        typer.Option(help="Encoder output: node or tensor name (default: graph output)."),
    ] = None,
    space: SpaceOpt = Path("space.h5"),
    name: Annotated[
        str | None, typer.Option(help="Name in the space (default: file name).")
    ] = None,
    preset: Annotated[
        str | None, typer.Option(help="imagenet | caffe | minus1to1 | unit | raw255")
    ] = None,
    preprocessing: Annotated[
        Path | None, typer.Option(help="Preprocessing JSON file, e.g. one an earlier add saved.")
    ] = None,
    input_size: Annotated[
        str | None, typer.Option(help="HxW (default: the model's static input shape).")
    ] = None,
    layout: Annotated[str | None, typer.Option(help="nchw | nhwc")] = None,
    color: Annotated[str | None, typer.Option(help="rgb | bgr | gray")] = None,
    scale: Annotated[
        float | None, typer.Option(help="Pixel (0-255) multiplier before mean/std.")
    ] = None,
    mean: Annotated[str | None, typer.Option(help="a,b,c")] = None,
    std: Annotated[str | None, typer.Option(help="a,b,c")] = None,
    save_preprocessing: Annotated[
        Path | None, typer.Option(help="Write the preprocessing used to this JSON file.")
    ] = None,
    methods: Annotated[
        str, typer.Option(help="Comma-separated attribution methods (`onnxattr methods`).",
                          show_default="saliency, grad_input, elrp")
    ] = "saliency,grad_input,elrp",
    epsilon: Annotated[
        float | None, typer.Option(help="ε of elrp and lrp (default: 1e-4; lrp: its preset's).")
    ] = None,
    lrp_preset: Annotated[
        str | None, typer.Option(help="Rule preset of the lrp method (`onnxattr rules`).")
    ] = None,
    reference: Annotated[
        str | None, typer.Option(help="What grad_input and elrp measure the input from: model "
                                      "(its own zero), gray or black (a probe pixel value).")
    ] = None,
    lrp_rules: Annotated[
        Path | None,
        typer.Option(help="TOML file of LRP rule overrides (`onnxattr rules --overrides`)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Probe images per forward-backward pass.")] = 16,
    device: Annotated[str, typer.Option(help="cpu | cuda | cuda:N | mps")] = "cpu",
    rtol: Annotated[
        float, typer.Option(help="Tolerance of the onnxruntime check (max-abs relative).")
    ] = 1e-3,
    overwrite: Annotated[bool, typer.Option(help="Replace a model of the same name.")] = False,
    map_size: Annotated[
        int | None,
        typer.Option(help="Side of the stored maps (default: the space's, else the probe size)."),
    ] = None,
    memory_mb: Annotated[
        int,
        typer.Option(help="Memory budget; the batch size (≤ --batch-size) is chosen to fit it."),
    ] = DEFAULT_MEMORY_MB,
    fast: Annotated[
        bool,
        typer.Option("--fast/--exact", help="--fast: BN folded into convs, channels-last, kept "
                     "only where its maps equal the exact path's on the first batch (else it "
                     "falls back and says so); --exact: the converted net as is."),
    ] = True,
    map_dtype: Annotated[
        str, typer.Option(help="float16 (maps scaled per image) | float32 (lossless).")
    ] = "float16",
    map_bits: Annotated[
        int, typer.Option(help="float16 mantissa bits kept, 1-10 (relative error 2^-(bits+1)).")
    ] = 2,
    feature_bits: Annotated[
        int | None,
        typer.Option(help="Mantissa bits of stored features, 1-23 (default: 10; 23 = lossless, "
                     "the default with --map-dtype float32)."),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Manifest: parallel Ray tasks (default: one per core/GPU; 0: no Ray)."),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(help="Manifest: join this Ray cluster (`ray start --head`; 'auto')."),
    ] = None,
    framework: Annotated[
        str | None,
        typer.Option(help="Framework it was trained in (default: read off the ONNX producer)."),
    ] = None,
    task: Annotated[str | None, typer.Option(help="The task it was trained for.")] = None,
    meta: Annotated[
        list[str] | None,
        typer.Option("--meta", help="Free metadata KEY=VALUE, stored and shown by list (repeat)."),
    ] = None,
) -> None:
    """Truncate MODEL at the encoder, convert, verify, attribute every probe image, store the maps.

    MODEL may be a manifest (rows: path, encoder_node, name, preset, preprocessing, framework,
    task): each model runs as a Ray task, one writer commits each; failures are reported and the
    others go on; models already in the space are skipped.
    """
    from .. import MapStorage, Preprocessing
    from ..api import add as add_model
    from ..api import is_manifest, method_parameters
    from ..errors import OnnxAttrError

    storage = MapStorage(dtype=map_dtype, mantissa_bits=map_bits, feature_bits=feature_bits)

    if save_preprocessing is not None and (
        save_preprocessing.is_dir() or not save_preprocessing.parent.is_dir()
    ):
        raise OnnxAttrError(f"--save-preprocessing {save_preprocessing}: give a file in an "
                            "existing folder (checked before anything is computed or stored)")
    spec: dict = Preprocessing.load(preprocessing).to_dict() if preprocessing else {}
    try:
        spec.update(
            {
                k: v
                for k, v in {
                    "preset": preset,
                    "layout": layout,
                    "color": color,
                    "scale": scale,
                    "input_size": _pair(input_size),
                    "mean": _floats(mean),
                    "std": _floats(std),
                }.items()
                if v is not None
            }
        )
    except ValueError as exc:
        raise OnnxAttrError(f"bad preprocessing flag: {exc}") from exc
    method_list = [m.strip() for m in methods.split(",") if m.strip()]
    params = method_parameters(method_list, epsilon, lrp_preset, lrp_rules, reference)
    if is_manifest(model):
        per_model = {"--encoder-node": encoder_node, "--name": name, "--preprocessing": preprocessing,
                     "--save-preprocessing": save_preprocessing, **{f"--{k.replace('_', '-')}": v
                                                                    for k, v in spec.items()}}
        given = [flag for flag, v in per_model.items() if v is not None]
        if given:
            raise OnnxAttrError(
                f"{', '.join(given)} apply to one model; with a manifest, set them per row "
                "(fields: path, encoder_node, name, preset, preprocessing, framework, task)"
            )
        _add_manifest(model, space, workers, address, overwrite, storage, dict(
            methods=method_list, method_params=params, batch_size=batch_size, device=device,
            rtol=rtol, map_size=map_size, memory_mb=memory_mb, fast=fast))
        return
    if workers is not None or address is not None:
        raise OnnxAttrError("--workers and --address apply to a manifest of models, not one model")
    result = add_model(
        space,
        model,
        encoder_node=encoder_node,
        name=name,
        preprocessing=spec,
        methods=method_list,
        method_params=params,
        batch_size=batch_size,
        device=device,
        rtol=rtol,
        overwrite=overwrite,
        metadata={"framework": framework, "task": task, "meta": _meta(meta or [])},
        progress=True,
        log=lambda msg: console.print(cli_terms(msg), highlight=False),
        map_size=map_size,
        memory_mb=memory_mb,
        storage=storage,
        fast=fast,
    )
    if save_preprocessing:
        from .. import ModelSpace

        attrs = next(r.attrs for r in ModelSpace(space).models() if r.name == result.name)
        Preprocessing.from_dict(json.loads(attrs["preprocessing"])).save(save_preprocessing)
    console.print(
        f"added {result.name!r} (encoder tensor {result.encoder_tensor!r}, "
        f"{', '.join(result.methods)}) in {result.seconds:.1f} s -> {space}"
    )


def _add_manifest(manifest: Path, space: Path, workers: int | None, address: str | None,
                  overwrite: bool, storage, options: dict) -> None:
    from ..api import add_many
    from ..errors import OnnxAttrError

    result = add_many(space, manifest, workers=workers, address=address, overwrite=overwrite,
                      storage=storage, log=lambda msg: console.print(cli_terms(msg), highlight=False),
                      **options)
    total = len(result.added) + len(result.skipped) + len(result.failed)
    console.print(
        f"{len(result.added)} added, {len(result.skipped)} already in the space, "
        f"{len(result.failed)} failed, in {result.seconds:.1f} s -> {space}"
    )
    for name, err in result.failed.items():
        err_console.print(f"failed {name}: {err}", highlight=False, soft_wrap=True)
    if result.failed:
        raise OnnxAttrError(
            f"{len(result.failed)} of {total} models failed (listed above); fix them and "
            "rerun the same command: models already added are skipped"
        )


def _track(label: str):
    from ..progress import track

    return lambda items: track(items, label)


def _pair(s: str | None) -> list[int] | None:
    if s is None:
        return None
    parts = s.lower().replace("×", "x").split("x")
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise ValueError(f"--input-size {s!r} must be HxW, e.g. 224x224")
    return [int(p) for p in parts]


def _meta(pairs: list[str]) -> dict[str, str]:
    from ..errors import OnnxAttrError

    out = {}
    for p in pairs:
        key, sep, value = p.partition("=")
        if not sep or not key.strip():
            raise OnnxAttrError(f"--meta {p!r} must be KEY=VALUE, e.g. --meta dataset=imagenet")
        out[key.strip()] = value.strip()
    return out


def _floats(s: str | None) -> list[float] | None:
    return None if s is None else [float(v) for v in s.split(",")]


@command(name="list", panel=PANEL_BUILD)
def list_models(space: SpaceOpt = Path("space.h5")) -> None:
    """List the models in a space."""
    from .. import ModelSpace

    records = ModelSpace(space).models()
    table = Table(title=f"{space}: {len(records)} models")
    cols = ("name", "framework", "task", "meta", "encoder", "methods", "images", "verified",
            "created")
    for col in cols:
        table.add_column(col, overflow="fold")
    for r in records:
        a = r.attrs
        meta = json.loads(a.get("meta") or "{}")
        table.add_row(
            r.name,
            str(a.get("framework", "")),
            str(a.get("task", "")),
            ", ".join(f"{k}={v}" for k, v in meta.items()),
            str(a.get("encoder_tensor", "")),
            ", ".join(r.methods),
            str(r.n_images),
            f"{float(a.get('verify_rel_err', float('nan'))):.1e}",
            str(a.get("created", "")),
        )
    console.print(table)


@command(name="remove", panel=PANEL_BUILD)
def remove(
    name: Annotated[str, typer.Argument(help="Model name.")], space: SpaceOpt = Path("space.h5")
) -> None:
    """Remove one model from a space."""
    from .. import ModelSpace

    ModelSpace(space).remove_model(name)
    console.print(f"removed {name!r} from {space}")


@command(name="check", panel=PANEL_CHECK)
def check(
    space: Annotated[Path, typer.Argument(help="Model-space HDF5 file.")],
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also list what is ok.")] = False,
) -> None:
    """Verify a whole space: format, structure, checksums, finite values, probe digest."""
    from ..api import check as check_space
    from ..errors import OnnxAttrError

    report = check_space(space)
    if report.damaged and report.damaged[0].path == "/":
        raise OnnxAttrError(report.damaged[0].detail)  # not openable as a space at all
    for f in report.findings:
        if verbose or f.level != "ok":
            style = {"damaged": "bold red", "note": "yellow"}.get(f.level, "green")
            console.print(Text.assemble((f"{f.level:8s}", style),
                                        f" {f.path}: {cli_terms(f.detail)}"), soft_wrap=True)
    intact = sum(report.models.values())
    console.print(f"{space}: probe {'ok' if report.probe_ok else 'DAMAGED'} "
                  f"({report.n_images} images), {intact} of {len(report.models)} models intact",
                  highlight=False)
    if not report.ok:
        raise OnnxAttrError(
            f"{len(report.damaged)} damaged item(s) in {space}; copy the intact models to a new "
            f"file with `onnxattr salvage {space} NEW.h5`"
        )


@command(name="salvage", panel=PANEL_CHECK)
def salvage_cmd(
    space: Annotated[Path, typer.Argument(help="Damaged model-space file (read only).")],
    out: Annotated[Path, typer.Argument(help="New space file for the intact models.")],
    overwrite: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
) -> None:
    """Copy the probe set and every intact model of SPACE into OUT (SPACE is left untouched)."""
    from ..api import salvage

    report = salvage(space, out, overwrite=overwrite)
    kept = [m for m, ok in report.models.items() if ok]
    lost = [m for m, ok in report.models.items() if not ok]
    console.print(f"salvaged {len(kept)} of {len(report.models)} models into {out}"
                  + (f"; left behind (damaged): {', '.join(lost)}" if lost else ""),
                  highlight=False)


@command(name="migrate", panel=PANEL_CHECK)
def migrate_cmd(
    space: Annotated[Path, typer.Argument(help="Single-file model space (format 1-2).")],
    backup: Annotated[bool, typer.Option(help="Keep the old file as SPACE.single.")] = True,
) -> None:
    """Convert a single-file space in place into per-model segments, which this onnxattr writes
    (maps, features, probe set and cache copied as stored, checksums unchanged)."""
    from ..api import migrate

    n, kept = migrate(space, backup=backup)
    console.print(f"converted {space}: {n} models, each in a segment of {space}.d/"
                  + (f"; the old file is kept as {kept}" if kept else ""), highlight=False)


@command(name="sketch", panel=PANEL_CHECK)
def sketch_cmd(
    space: Annotated[Path, typer.Argument(help="Model-space HDF5 file.")],
    methods: Annotated[
        str | None, typer.Option(help="Comma-separated methods (default: all stored).")
    ] = None,
    dims: Annotated[int, typer.Option(help="Dimensions per probe image.")] = 1024,
) -> None:
    """Compute the sketches (estimator sketch:METHOD) that models lack: added by older versions,
    or with maps under 128x128 (add stores sketches only where they are >= 16x smaller)."""
    from ..api import sketch

    done = sketch(space, methods.split(",") if methods else None, dims=dims)
    for name, ms in done.items():
        console.print(f"{name}: sketched {', '.join(ms)}", highlight=False)
    console.print(f"{space}: {len(done)} model(s) sketched"
                  + ("" if done else " (every model already has its sketches)"), highlight=False)


@command(name="methods", panel=PANEL_BUILD)
def methods_cmd() -> None:
    """List the registered attribution methods and their parameters."""
    from ..attribution import METHODS

    for name, cls in sorted(METHODS.items()):
        console.print(f"{name:12s} {cls.defaults or ''}  {(cls.__doc__ or '').splitlines()[0]}")


@command(name="features", panel=PANEL_CHECK)
def features_cmd(
    names: Annotated[
        list[str] | None, typer.Argument(help="Models (default: all in the space).")
    ] = None,
    space: SpaceOpt = Path("space.h5"),
    recompute: Annotated[
        bool,
        typer.Option(help="Recompute wrongly pooled features (named models: always) from the ONNX files."),
    ] = False,
    batch_size: Annotated[int, typer.Option(help="Probe images per forward pass.")] = 16,
    device: Annotated[str, typer.Option(help="cpu | cuda | cuda:N | mps")] = "cpu",
) -> None:
    """Check how each model's stored features were pooled; --recompute fixes the wrong ones."""
    from ..api import check_features

    checks = check_features(space, names, recompute=recompute, batch_size=batch_size, device=device,
                      log=console.print)
    table = Table(title=f"{space}: stored features")
    for col in ("model", "status", "dims", "how they were pooled"):
        table.add_column(col, overflow="fold")
    for c in checks:
        table.add_row(c.name, c.status, str(c.dim), c.detail)
    console.print(table)
    wrong = [c.name for c in checks if c.status == "wrong"]
    if wrong:
        console.print(
            f"{len(wrong)} model(s) with wrongly pooled features; "
            f"`onnxattr features -s {space} --recompute` rewrites them",
        )
