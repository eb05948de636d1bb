"""The `add` pipeline: ONNX file -> truncated, fixed-up, converted, verified encoder -> maps in the space.

`add` in three parts: compute (here: `compute_model`, encoder -> maps and features, the space
untouched, what a worker runs), store (`store.store_model`, the one way a model is committed) and
many models (`cluster.add_many`). `add_model` is compute then store, so a failure leaves the space
as it was.
"""

from __future__ import annotations

import importlib.metadata as md
import platform
import re
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .analysis.sketch import sketch_dims_for, sketch_maps
from .attribution import attribute, get_method
from .attribution.fast import CPU_TIME, DEVICE_TIME, ExecutionPath, choose_path, keep_faster
from .device import resolve_device
from .encoder import load_encoder
from .errors import OnnxAttrError, OnnxAttrWarning
from .features import feature_pooling_record, pool_features
from .memory import DEFAULT_MEMORY_MB, MB, PeakMeter, batch_for_budget, budget_bytes
from .onnxgraph.convert import TorchNet, ort_providers, to_torch, verify
from .onnxgraph.fixups import SINGLE_IMAGE
from .preprocess import Preprocessing
from .probe import ProbeSet
from .progress import Stopwatch, track
from .space import DEFAULT_STORAGE, MapStorage, ModelSpace, check_name
from .store import (
    AddResult,
    ComputedModel,
    check_map_size,
    load_or_build_probe,
    store_model,
    store_pending,
    work_key,
)

DEFAULT_METHODS = ("saliency", "grad_input", "elrp")
#: images in the first batch, on which the per-image memory cost is measured
PROBE_BATCH = 2
_LIBRARIES = ("onnxattr", "onnx", "onnxruntime", "onnx2torch", "torch", "numpy", "h5py")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for lib in _LIBRARIES:
        try:
            versions[lib] = md.version(lib)
        except md.PackageNotFoundError:
            continue
    return versions


def default_name(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", path.name.removesuffix(".onnx"))


#: ONNX producer names of the common exporters -> the framework the model came from.
_PRODUCERS = {"pytorch": "pytorch", "tf2onnx": "tensorflow", "keras2onnx": "keras",
              "paddle2onnx": "paddle", "onnxmltools": "onnxmltools", "skl2onnx": "sklearn",
              "mxnet": "mxnet", "caffe2": "caffe2"}


def framework_from_producer(producer: str) -> str:
    """The framework an ONNX file was exported from, read off its producer_name ('' if unknown)."""
    return _PRODUCERS.get(producer.strip().lower(), "")


def normalisation_unspecified(spec: Preprocessing | dict[str, Any] | None) -> bool:
    """True when neither a preset nor scale/mean/std was given: the defaults are a guess."""
    if isinstance(spec, Preprocessing):
        return False
    return not any((spec or {}).get(k) is not None for k in ("preset", "scale", "mean", "std"))


def add_model(
    space: str | Path,
    model_path: str | Path,
    encoder_node: str | None = None,
    name: str | None = None,
    preprocessing: Preprocessing | dict[str, Any] | None = None,
    methods: Sequence[str] = DEFAULT_METHODS,
    method_params: dict[str, dict[str, Any]] | None = None,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    rtol: float = 1e-3,
    overwrite: bool = False,
    metadata: dict[str, Any] | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    map_size: int | None = None,
    storage: MapStorage = DEFAULT_STORAGE,
    memory_mb: int | None = DEFAULT_MEMORY_MB,
    fast: bool = True,
) -> AddResult:
    """Attribute one ONNX model on the space's probe set and store its maps (see README).

    ``map_size``: side of the stored maps (default: the space's, else the probe size); smaller
    maps store and compare faster, and every model of a space must use the same size.
    ``memory_mb``: the process's memory budget; the batch size (at most ``batch_size``) is chosen
    from the per-image cost measured on a first batch of two images. None: ``batch_size`` as is.
    ``fast``: run on the rewritten encoder (`attribution.fast`) where its maps equal the exact
    path's on the first batch, else (and with False) on the converted net as is.
    """
    t0 = time.perf_counter()
    say = log or (lambda *_: None)
    space_obj = ModelSpace(space)
    model_path = Path(model_path)
    name = check_name(default_name(model_path) if name is None else name)
    if not methods:
        raise OnnxAttrError("no attribution method given; name at least one, e.g. "
                            "`methods=saliency` (`onnxattr methods` lists them)")
    if not overwrite and space_obj.has_model(name):
        raise OnnxAttrError(f"model {name!r} is already in {space}; pass `overwrite=True` or another `name`")
    device = resolve_device(device)
    map_size = check_map_size(space_obj, map_size)
    method_params = follow_space(space_obj, methods, method_params)
    key = work_key(model_path, encoder_node, preprocessing, methods, method_params, map_size,
                   storage, space_obj.probe_digest()) if model_path.is_file() else ""
    kept = store_pending(space_obj, name, key, overwrite=overwrite, storage=storage, say=say)
    if kept is not None:
        kept.seconds = time.perf_counter() - t0
        return kept
    loaded: list[tuple[ProbeSet, bool]] = []

    def probe_once() -> ProbeSet:  # read (or built) once the model has loaded and been fixed up
        loaded.append(load_or_build_probe(space_obj, say))
        return loaded[0][0]

    computed = compute_model(
        model_path, probe_once, name=name, encoder_node=encoder_node, preprocessing=preprocessing,
        methods=methods, method_params=method_params, batch_size=batch_size, device=device,
        rtol=rtol, metadata=metadata, progress=progress, log=log,
        map_size=map_size, storage=storage, memory_mb=memory_mb, fast=fast,
    )
    probe, had_probe = loaded[0]
    store_model(space_obj, name, computed, key=key, probe=None if had_probe else probe,
                overwrite=overwrite, storage=storage)
    computed.result.seconds = time.perf_counter() - t0
    return computed.result


def follow_space(space: ModelSpace, methods: Sequence[str],
                 method_params: dict[str, dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """`method_params`, where a method takes a `reference` and none is given, with the reference
    the space's maps of that method already measure from: a model added to a space made before
    the default changed (grad_input and elrp measured from each model's own zero then) still
    compares with the models there. A fresh space, or one whose maps disagree: the default. The
    log line that ends the attribution names each method's reference."""
    from .attribution import METHODS
    from .space_reader import read_space

    params = {m: dict(p) for m, p in (method_params or {}).items()}
    open_ = [m for m in methods if m in METHODS and "reference" in METHODS[m].defaults
             and "reference" not in params.get(m, {})]
    if not open_ or not space.path.exists() or not space.has_probe():
        return params
    with read_space(space.path) as reader:
        seen = {m: {r for n in reader.names() if (r := reader.map_reference(n, m)) is not None}
                for m in open_}
    for m, refs in seen.items():
        if len(refs) == 1 and (ref := refs.pop()) != METHODS[m].defaults["reference"]:
            params.setdefault(m, {})["reference"] = ref
    return params


def compute_model(
    model_path: str | Path,
    probe: ProbeSet | Callable[[], ProbeSet],
    *,
    name: str,
    encoder_node: str | None = None,
    preprocessing: Preprocessing | dict[str, Any] | None = None,
    methods: Sequence[str] = DEFAULT_METHODS,
    method_params: dict[str, dict[str, Any]] | None = None,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    rtol: float = 1e-3,
    metadata: dict[str, Any] | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    map_size: int | None = None,
    storage: MapStorage = DEFAULT_STORAGE,
    memory_mb: int | None = DEFAULT_MEMORY_MB,
    fast: bool = True,
) -> ComputedModel:
    """Everything `add_model` does except touching the space: what a worker runs. ``probe`` may
    be a callable, called once the model has loaded (a bad model fails before any probe work)."""
    clock = Stopwatch()
    say = log or (lambda *_: None)
    model_path = Path(model_path)
    device = resolve_device(device)
    if batch_size < 1:
        raise OnnxAttrError("`batch_size` must be at least 1")
    if memory_mb is not None and memory_mb < 256:
        raise OnnxAttrError(f"`memory_mb={memory_mb}` is too small to run a model; give at least 256")
    method_objs = [get_method(m, **(method_params or {}).get(m, {})) for m in methods]

    enc = load_encoder(model_path, encoder_node, preprocessing)
    onnx_sha, tensor, encoder, pre, axis, fixups = (
        enc.onnx_sha256, enc.tensor, enc.model, enc.preprocessing, enc.channel_axis, enc.fixups
    )
    say(f"encoder {tensor!r}: loaded, truncated, fixed up ({clock.lap():.1f} s)")
    say(f"preprocessing: {pre.describe()}")
    if normalisation_unspecified(preprocessing):
        warnings.warn(
            "no `preset`, `preprocessing` or `scale`/`mean`/`std` given: assuming x = pixel/255 "
            "(mean 0, std 1); a model trained with other input scaling gets wrong maps, so give "
            "its own values (presets: imagenet, caffe, minus1to1, unit, raw255)",
            OnnxAttrWarning, stacklevel=2,
        )
    for fix in fixups:
        say(f"fix-up: {fix}")
    if any(f.code == SINGLE_IMAGE for f in fixups):
        batch_size = 1

    if callable(probe):
        probe = probe()
    net = to_torch(encoder)
    n_check = min(8, batch_size, len(probe))
    check = pre.apply(probe.images[:n_check]).numpy()
    net.module.to(device)
    err = verify(net, encoder, check, rtol, probe.names[:n_check])
    provider = ort_provider_name(device)
    say(f"conversion verified against onnxruntime ({provider}): max relative error {err:.2e} "
        f"(tolerance {rtol:.0e}) ({clock.lap():.1f} s)")

    references = {m.name: pre.constant_input(p).to(device) for m in method_objs
                  if (p := m.reference_pixel()) is not None}
    side = map_size or probe.size
    n = len(probe)
    maps = {m.name: np.empty((n, side, side), storage.dtype) for m in method_objs}
    scales = {m.name: np.empty(n, np.float32) for m in method_objs}
    sketches: dict[str, np.ndarray] = {}
    sketch_dims = sketch_dims_for(side * side)
    features: list[torch.Tensor] = []
    out_shape: list[int] = []

    def keep_features(o: torch.Tensor) -> None:
        out_shape[:] = o.shape[1:]
        features.append(pool_features(o, axis.axis).cpu())

    execution = ExecutionPath(net, "exact", reason="asked for (--exact, fast=False)" if not fast else
                              "all probe images fit in the first batch, which runs exact")

    def run(start: int, stop: int, on: TorchNet) -> tuple[torch.Tensor, dict[str, torch.Tensor], float]:
        """Attribute probe images start:stop with the net `on` into the arrays; also the seconds
        of the attribution itself (`path_clock`)."""
        x = pre.apply(probe.images[start:stop]).to(device)
        t0 = path_clock(device)
        out = attribute(on, x, method_objs, on_output=keep_features, references=references)
        seconds = path_clock(device) - t0
        batch = {m: pre.invert_map(a.float(), side).cpu().numpy() for m, a in out.items()}
        check_finite(name, probe.names[start:stop], features[-1].numpy(), batch)
        for m, a in batch.items():
            maps[m][start:stop], scale = storage.encode(a)
            if sketch_dims:
                sk = sketch_maps(a, start, sketch_dims)
                sketches.setdefault(m, np.empty((n, sk.shape[1]), sk.dtype))[start:stop] = sk
            if scale is not None:
                scales[m][start:stop] = scale
        return x, out, seconds

    first = min(PROBE_BATCH, batch_size, n)
    meter = PeakMeter(device)
    with meter.measure():
        x0, maps0, exact_first = run(0, first, net)
    done = first
    if fast and first < n:  # the first batch ran exact: the fast path must reproduce its maps
        execution = choose_path(net, x0, method_objs, maps0, clock=lambda: path_clock(device),
                                references=references)
        if execution.path == "fast" and n - first >= 2 * first:  # then the faster path goes on

            def timed_run(on: TorchNet) -> float:
                nonlocal done
                done += first
                return run(done - first, done, on)[2]

            execution = keep_faster(execution, net, timed_run, first,
                                    DEVICE_TIME if device.type == "cuda" else CPU_TIME, exact_first)
    say(execution.describe())
    if memory_mb is not None and done < n:
        batch_size = _budget_batch(meter, first, n, [*maps.values(), *sketches.values()],
                                   memory_mb, device, batch_size, say)
    for start in track(range(done, n, batch_size), f"attributing {name}", progress):
        run(start, min(start + batch_size, n), execution.net)
    named = [m.name + (f" (input from {m.params['reference']})" if "reference" in m.params else "")
             for m in method_objs]
    say(f"attributed {n} probe images with {', '.join(named)} ({clock.lap():.1f} s)")

    result = AddResult(
        name=name, encoder_tensor=tensor, verify_rel_err=err, fixups=fixups,
        seconds=clock.total(), methods={m.name: m.params for m in method_objs},
    )
    attrs = {
        "onnx_path": str(model_path), "onnx_sha256": onnx_sha,
        "encoder_node": encoder_node or "", "encoder_tensor": tensor,
        "preprocessing": pre.to_dict(), "methods": result.methods,
        "fixups": [f.to_dict() for f in fixups],
        "verify_rel_err": err, "versions": library_versions(), "device": str(device),
        "execution": execution.record(),
        "framework": framework_from_producer(enc.producer), "task": "", "meta": {},
        **{k: v for k, v in (metadata or {}).items() if v not in (None, "")},
    }
    feats = torch.cat(features).numpy()
    attrs["features_pooling"] = feature_pooling_record(axis, out_shape, feats.shape[1])
    encoded = {m: (a, scales[m] if storage.dtype == "float16" else None) for m, a in maps.items()}
    return ComputedModel(encoded, feats, attrs, result, sketches)


def path_clock(device: torch.device) -> float:
    """The clock the fast and exact paths are compared by: process CPU time; on CUDA, where kernels
    run asynchronously, wall time once the device has finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return time.perf_counter()
    return time.process_time()


def ort_provider_name(device: torch.device) -> str:
    """Which onnxruntime provider checked the conversion, with a hint when CUDA had to fall back."""
    first = ort_providers(device)[0]
    name = first[0] if isinstance(first, tuple) else first
    if device.type == "cuda" and name == "CPUExecutionProvider":
        return "CPU provider: onnxruntime has no CUDA provider here; pip install 'onnxattr[gpu]'"
    return name


def check_finite(name: str, images: Sequence[str], features: np.ndarray,
                 maps: dict[str, np.ndarray]) -> None:
    """Refuse a batch whose encoder output or maps hold NaN/inf, naming the probe images."""

    def bad(a: np.ndarray) -> list[str]:
        rows = ~np.isfinite(a.reshape(len(a), -1)).all(axis=1)
        return [images[i] for i in np.flatnonzero(rows)]

    def listed(names: list[str]) -> str:
        more = f" and {len(names) - 5} more" if len(names) > 5 else ""
        return ", ".join(names[:5]) + more

    if bad_out := bad(features):
        raise OnnxAttrError(
            f"the encoder output of {name!r} is NaN/inf on probe images {listed(bad_out)}; "
            "nothing was stored. The model itself overflows on these inputs: check the "
            "preprocessing (`preset`, `scale`, `mean`, `std`) against the model's training, or "
            "pick another `encoder_node`"
        )
    for method, a in maps.items():
        if bad_map := bad(a):
            raise OnnxAttrError(
                f"{method} maps of {name!r} are NaN/inf on probe images {listed(bad_map)} "
                "(the encoder output is finite); nothing was stored. Leave that method out "
                "(`methods`) or, for elrp/lrp, raise `epsilon`"
            )


def _budget_batch(meter: PeakMeter, first: int, n: int, arrays: Sequence[np.ndarray],
                  memory_mb: int, device: torch.device, cap: int, say: Callable[[str], None]) -> int:
    """The batch size that keeps the rest of `add` within ``memory_mb``, from the first batch."""
    if meter.growth is None or meter.base is None:
        say(f"memory: this platform does not report peak memory; batch size {cap} as given")
        return cap
    per_image = meter.growth / first
    # maps still to be filled live in host memory; on CUDA the budget is the device's
    reserve = 0 if meter.cuda else int(sum(a.nbytes for a in arrays) * (n - first) / n)
    budget = budget_bytes(memory_mb, device)
    batch = batch_for_budget(per_image, meter.base, reserve, budget, cap)
    where = "GPU memory" if meter.cuda else "memory"
    say(f"{where}: {per_image / MB:.0f} MB per image (measured on the first {first}); "
        f"batch size {batch} keeps add within {budget / MB:.0f} MB")
    if meter.base + reserve + per_image > budget:
        say(f"warning: even one image at a time needs ~{(meter.base + reserve + per_image) / MB:.0f} MB, "
            f"over `memory_mb={memory_mb}`; going on at batch size 1 (use a smaller `map_size` or "
            "fewer probe images)")
    return batch
