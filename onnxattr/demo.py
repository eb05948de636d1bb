"""`onnxattr demo`: the zoo's real pretrained models, from several frameworks, in one model space.

Zoo (ONNX files built from installed wheels) -> embedded probe set -> every model added with every
method -> report (heatmaps, trees, rankings) and each model's nearest neighbour per method.
Re-running reuses the zoo cache and every model already in the space.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .attribution import list_methods
from .errors import OnnxAttrError
from .pipeline import add_model
from .probe import embedded_probe
from .space import ModelSpace


@dataclass
class DemoResult:
    space: Path
    report: Path
    models: list[str]
    failed: dict[str, str]
    # method -> model -> (nearest other model, affinity)
    neighbours: dict[str, dict[str, tuple[str, float]]] = field(default_factory=dict)
    seconds: float = 0.0


def run_demo(
    out: str | Path = "onnxattr-demo",
    models: Sequence[str] | None = None,
    n: int = 64,
    size: int = 224,
    methods: Sequence[str] | None = None,
    batch_size: int = 16,
    device: str = "cpu",
    cache: str | Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> DemoResult:
    """Build the zoo (whatever of it is installed), the space and the report under `out`."""
    import model_zoo

    from .distances import ranking
    from .estimators import compute_affinity
    from .report import write_report

    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        built = model_zoo.build(models, cache=cache, progress=progress)
    for w in caught:
        if "zoo" in str(w.message) or "pip install" in str(w.message):
            log(f"skipped: {w.message}")
    if len(built) < 2:
        raise OnnxAttrError(
            f"only {len(built)} zoo model(s) could be built; the demo compares at least two: "
            "`pip install -e '.[zoo,tf]'` installs the zoo's wheels"
        )
    space = ModelSpace(out / "space.h5")
    if not space.has_probe():
        space.write_probe(embedded_probe(size=size, n=n, seed=0))
    methods = list(methods or list_methods())
    done = {r.name: r.attrs for r in space.models()} if space.path.exists() else {}
    failed: dict[str, str] = {}
    for b in built:
        e = b.entry
        if e.name in done and done[e.name].get("zoo_onnx") == str(b.path):
            continue
        log(f"adding {e.name} ({e.framework}, {e.task})")
        try:
            add_model(
                space.path, b.path, encoder_node=e.encoder_node, name=e.name,
                preprocessing=e.preprocessing, methods=methods, batch_size=batch_size,
                device=device, overwrite=True, progress=progress, log=lambda m: log(f"  {m}"),
                metadata={"framework": e.framework, "task": e.task, "zoo_source": e.source,
                          "zoo_onnx": str(b.path)},
            )
        except OnnxAttrError as exc:
            failed[e.name] = str(exc)
            log(f"  failed: {exc}")
    names = [r.name for r in space.models()]
    report = write_report(space.path, out / "report.html")
    neighbours: dict[str, dict[str, tuple[str, float]]] = {}
    for method in methods:
        matrix, _ = compute_affinity(space.path, method)
        neighbours[method] = {m: ranking(matrix, m)[0] for m in matrix.names}
    return DemoResult(space.path, report, names, failed, neighbours, time.perf_counter() - t0)
