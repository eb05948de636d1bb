"""Many models into one space: a manifest, one Ray task per model, writers in parallel.

Each manifest row becomes one task that converts, verifies and attributes its model on the probe
set (sent once to the object store) and writes the model's segment beside the space itself (or,
on a node that cannot reach the space's folder, returns the encoded maps). The calling process
only commits each model's index entry as it arrives (`store.commit_staged` / `store.store_model`,
exactly as `add` does): all or nothing, its maps kept in a pending file when the space cannot
take them now, and stored from there without recomputing on a rerun.
A model that fails is reported with its error and the others go on; models already in the space
are skipped, so a rerun after a failure or an interruption does only what is missing.

Without Ray (`workers=0`, or the `cluster` extra not installed) the same rows run one after
another in this process.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._compat import tomllib
from .errors import OnnxAttrError
from .space import DEFAULT_STORAGE, MapStorage, ModelSpace, StagedModel, check_name
from .store import (
    AddResult,
    check_map_size,
    commit_staged,
    load_or_build_probe,
    store_model,
    store_pending,
    work_key,
)

MANIFEST_SUFFIXES = (".toml", ".json", ".csv")
_FIELDS = ("path", "encoder_node", "name", "preset", "preprocessing", "framework", "task")


@dataclass
class ManifestEntry:
    """One model to add: where it is, where its encoder ends, how its input is prepared."""

    path: Path
    name: str
    encoder_node: str | None = None
    preset: str | None = None
    preprocessing: dict[str, Any] = field(default_factory=dict)
    framework: str = ""
    task: str = ""

    def spec(self) -> dict[str, Any]:
        """The preprocessing argument of `add_model`: the file's values, then the preset."""
        return {**self.preprocessing, **({"preset": self.preset} if self.preset else {})}


def is_manifest(path: str | Path) -> bool:
    return Path(path).suffix.lower() in MANIFEST_SUFFIXES


def read_manifest(path: str | Path) -> list[ManifestEntry]:
    """Rows of a TOML (``[[model]]`` tables), JSON (a list, or ``{"models": [...]}``) or CSV
    manifest. Columns: path (required; relative to the manifest), encoder_node, name (default:
    the file name), preset, preprocessing (a JSON file as written by --save-preprocessing, or an
    inline table), framework, task."""
    path = Path(path)
    if not path.is_file():
        raise OnnxAttrError(f"manifest {path} does not exist; give a .toml, .json or .csv file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            data = tomllib.loads(path.read_text(encoding="utf-8"))
            rows = data.get("model", data.get("models"))
        elif suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            rows = data.get("models") if isinstance(data, dict) else data
        elif suffix == ".csv":
            with path.open(newline="", encoding="utf-8") as fh:
                rows = [
                    {k.strip(): (v or "").strip() for k, v in r.items() if k}
                    for r in csv.DictReader(fh)
                ]
        else:
            raise OnnxAttrError(
                f"manifest {path}: unknown type {suffix!r}; use .toml, .json or .csv"
            )
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise OnnxAttrError(f"manifest {path} cannot be parsed: {exc}") from None
    if not isinstance(rows, list) or not rows:
        raise OnnxAttrError(
            f"manifest {path} lists no models; TOML: [[model]] tables, JSON: a list of objects, "
            "CSV: a header row with at least 'path'"
        )
    entries, names = [], set()
    from .pipeline import default_name

    for i, row in enumerate(rows, start=1):
        where = f"manifest {path}, model {i}"
        if not isinstance(row, dict):
            raise OnnxAttrError(f"{where}: expected a table of fields, got {type(row).__name__}")
        unknown = set(row) - set(_FIELDS)
        if unknown:
            raise OnnxAttrError(
                f"{where}: unknown field(s) {', '.join(sorted(unknown))}; known: {', '.join(_FIELDS)}"
            )
        if not row.get("path"):
            raise OnnxAttrError(f"{where}: no 'path' (the ONNX file)")
        model = Path(str(row["path"])).expanduser()
        model = model if model.is_absolute() else path.parent / model
        name = check_name(str(row.get("name") or default_name(model)))
        if name in names:
            raise OnnxAttrError(
                f"{where}: name {name!r} appears twice; give each model its own name"
            )
        names.add(name)
        pre = row.get("preprocessing") or {}
        if isinstance(pre, str):
            pre_path = Path(pre) if Path(pre).is_absolute() else path.parent / pre
            from .preprocess import Preprocessing

            pre = Preprocessing.load(pre_path).to_dict()
        entries.append(
            ManifestEntry(
                path=model,
                name=name,
                encoder_node=row.get("encoder_node") or None,
                preset=row.get("preset") or None,
                preprocessing=dict(pre),
                framework=str(row.get("framework") or ""),
                task=str(row.get("task") or ""),
            )
        )
    return entries


@dataclass
class ManyResult:
    """What a manifest add did."""

    added: dict[str, float] = field(default_factory=dict)  # name -> seconds of its task
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # name -> error
    seconds: float = 0.0
    workers: int = 0
    nodes: int = 0


@dataclass
class Staged:
    """What a Ray worker returns for a model whose segment it wrote beside the space itself."""

    staged: StagedModel
    result: AddResult


def _compute(entry: ManifestEntry, probe: Any, options: dict[str, Any]) -> Any:
    """One model, in a worker (or in this process): everything but the write."""
    from .pipeline import compute_model

    return compute_model(
        entry.path,
        probe,
        name=entry.name,
        encoder_node=entry.encoder_node,
        preprocessing=entry.spec(),
        progress=False,
        metadata={"framework": entry.framework, "task": entry.task},
        **options,
    )


def _compute_and_stage(entry: ManifestEntry, probe: Any, options: dict[str, Any], space: str,
                       overwrite: bool) -> Any:
    """In a Ray worker: compute the model and write its segment beside the space, so that the
    driver only commits the index (segments of many workers are written in parallel). A worker
    that cannot write there (another machine without the shared file system, a full disk)
    returns the computed maps for the driver to store."""
    computed = _compute(entry, probe, options)
    try:
        staged = ModelSpace(space).stage_model(
            entry.name, computed.maps, computed.features, computed.attrs, overwrite=overwrite,
            storage=options["storage"], sketches=computed.sketches)
    except (OnnxAttrError, OSError):
        return computed
    return Staged(staged, computed.result)


def add_many(
    space: str | Path,
    entries: Sequence[ManifestEntry],
    *,
    workers: int | None = None,
    address: str | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
    storage: MapStorage = DEFAULT_STORAGE,
    **options: Any,
) -> ManyResult:
    """Add every manifest entry not yet in ``space``; ``options`` go to `compute_model`
    (methods, method_params, batch_size, device, rtol, map_size, memory_mb).

    ``workers``: parallel Ray tasks on this machine (default: one per core, or per GPU with
    ``device='cuda'``); 0 runs the models one after another in this process without Ray.
    ``address``: join a running Ray cluster (``ray start --head``) instead; its nodes decide
    how many tasks run at once.
    """
    from .device import resolve_device
    from .pipeline import DEFAULT_METHODS, follow_space

    t0 = time.perf_counter()
    options["device"] = str(resolve_device(options.get("device", "cpu")))
    sp = ModelSpace(space)
    result = ManyResult()
    have = {r.name for r in sp.models()} if sp.path.exists() else set()
    result.skipped = [e.name for e in entries if e.name in have and not overwrite]
    todo = [e for e in entries if e.name not in result.skipped]
    if result.skipped:
        log(
            f"skipping {len(result.skipped)} model(s) already in {space}: {', '.join(result.skipped)}"
        )
    if not todo:
        result.seconds = time.perf_counter() - t0
        return result
    options["map_size"] = check_map_size(sp, options.get("map_size"))
    options["method_params"] = follow_space(sp, options.get("methods", DEFAULT_METHODS),
                                            options.get("method_params"))
    probe, had_probe = load_or_build_probe(sp, log)
    options["map_size"] = options["map_size"] or probe.size
    options["storage"] = storage
    if not had_probe:
        sp.write_probe(probe)

    keys = {
        e.name: work_key(e.path, e.encoder_node, e.spec(), options.get("methods", DEFAULT_METHODS),
                         options.get("method_params"), options["map_size"], storage,
                         sp.probe_digest()) if e.path.is_file() else ""
        for e in todo
    }

    def commit(name: str, computed: Any) -> None:
        if isinstance(computed, Staged):
            commit_staged(sp, computed.staged, key=keys[name], overwrite=overwrite)
        else:
            store_model(sp, name, computed, key=keys[name], probe=None, overwrite=overwrite,
                        storage=storage)
        result.added[name] = computed.result.seconds

    def fail(name: str, exc: BaseException) -> None:
        msg = str(exc) if isinstance(exc, OnnxAttrError) else f"{type(exc).__name__}: {exc}"
        result.failed[name] = msg.splitlines()[0] if msg else type(exc).__name__
        log(f"failed {name}: {result.failed[name]}")

    def status(running: int) -> str:
        return (
            f"[{len(result.added)} done, {len(result.failed)} failed, {running} running, "
            f"{len(todo) - len(result.added) - len(result.failed) - running} waiting]"
        )

    run = []
    for e in todo:  # maps an earlier run computed but could not store are stored, not recomputed
        try:
            kept = store_pending(sp, e.name, keys[e.name], overwrite=overwrite, storage=storage,
                                 say=log)
        except OnnxAttrError as exc:
            fail(e.name, exc)
            continue
        if kept is None:
            run.append(e)
        else:
            result.added[e.name] = 0.0
    use_ray = workers != 0 and _ray_available(address)
    if not use_ray:
        result.workers = 1
        for i, e in enumerate(run):
            log(f"{status(1)} adding {e.name}")
            try:
                commit(e.name, _compute(e, probe, options))
            except Exception as exc:  # noqa: BLE001  (reported; the other models go on)
                fail(e.name, exc)
            if i == len(run) - 1:
                log(status(0))
        result.seconds = time.perf_counter() - t0
        return result

    import ray

    started = _start_ray(address, workers, options["device"])
    try:
        resources = ray.cluster_resources()
        result.nodes = len([n for n in ray.nodes() if n.get("Alive")])
        gpu = options["device"].startswith("cuda")
        per_task = {"num_gpus": 1, "num_cpus": 0} if gpu else {"num_cpus": 1}
        result.workers = int(resources.get("GPU" if gpu else "CPU", 1))
        log(f"Ray: {result.nodes} node(s), {result.workers} parallel task(s)")
        remote = ray.remote(max_retries=0, **per_task)(_compute_and_stage)
        probe_ref = ray.put(probe)
        where = str(sp.path.resolve())
        pending = {remote.remote(e, probe_ref, options, where, overwrite): e.name for e in run}
        log(status(min(len(pending), result.workers)))
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            name = pending.pop(done[0])
            try:
                commit(name, ray.get(done[0]))
                log(
                    f"{status(min(len(pending), result.workers))} added {name} "
                    f"({result.added[name]:.1f} s)"
                )
            except ray.exceptions.RayTaskError as exc:
                fail(name, exc.cause if exc.cause is not None else exc)
                log(status(min(len(pending), result.workers)))
            except (OnnxAttrError, ray.exceptions.RayError) as exc:
                fail(name, exc)
    finally:
        if started:
            ray.shutdown()
    result.seconds = time.perf_counter() - t0
    return result


def _ray_available(address: str | None) -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        if address:
            raise OnnxAttrError("`address` needs Ray: pip install 'onnxattr[cluster]'") from None
        return False
    return True


def _start_ray(address: str | None, workers: int | None, device: str) -> bool:
    """Connect to ``address`` or start a local Ray; True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    env = {
        "env_vars": {
            "PYTHONPATH": os.pathsep.join(
                p
                for p in (str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH"))
                if p
            )
        }
    }
    kw: dict[str, Any] = dict(
        runtime_env=env,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
        configure_logging=True,
    )
    if address:
        kw["address"] = address
    else:
        # "local" always starts a fresh Ray: without it ray.init() joins whatever cluster
        # RAY_ADDRESS or a stale /tmp/ray/ray_current_cluster names, and refuses num_cpus.
        kw["address"] = "local"
        kw["num_cpus"] = workers or os.cpu_count() or 1
        if device.startswith("cuda"):
            import torch

            kw["num_gpus"] = torch.cuda.device_count()
    for attempt in (1, 2):  # a loaded machine can miss Ray's fixed 30 s raylet start-up window
        try:
            ray.init(**kw)
            return True
        except Exception as exc:  # noqa: BLE001  (Ray raises bare Exception on a slow start)
            ray.shutdown()
            if attempt == 2:
                where = f"the Ray cluster at {address}" if address else "a local Ray"
                raise OnnxAttrError(
                    f"could not start {where}: {str(exc).splitlines()[0]}; retry, or add the "
                    "models one after another with `workers=0`"
                ) from None
    return True
