"""The public Python API, re-exported by ``onnxattr``: what a notebook (or the CLI) calls.

Every function takes plain arguments and returns plain objects (dataclasses, numpy arrays in
:class:`~onnxattr.analysis.distances.LabelledMatrix`, paths); every CLI command's work is one
call here. Errors are :class:`~onnxattr.errors.OnnxAttrError` with a one-line message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from .memory import DEFAULT_MEMORY_MB

if TYPE_CHECKING:
    import torch

    from .analysis.confidence import Disagreement
    from .analysis.distances import LabelledMatrix
    from .analysis.evaluation import Evaluation, Oracle
    from .analysis.explorer import ExplorerResult
    from .analysis.stability import Stability
    from .benchmark.run import BenchResult
    from .cluster import ManyResult
    from .features import FeatureCheck
    from .integrity import CheckReport
    from .onnxgraph.nodes import NodeInfo
    from .pipeline import AddResult
    from .preprocess import Preprocessing
    from .probe import ProbeSet
    from .space import MapStorage, ModelSpace
    from .transfer import EstimateResult, TargetTask, TransferResult
    from .transfer.sources import SpaceSource

#: A model space: its HDF5 path or a :class:`~onnxattr.space.ModelSpace` (``ModelSpace(path)``
#: opens one; the file is created on first write).
SpaceLike = Union[str, Path, "ModelSpace"]


def _path(space: SpaceLike) -> Path:
    return Path(getattr(space, "path", space))


def _space(space: SpaceLike) -> ModelSpace:
    from .space import ModelSpace

    return ModelSpace(_path(space))


def build_probe(
    folder: str | Path | None = None,
    *,
    size: int = 224,
    n: int | None = None,
    seed: int = 0,
    space: SpaceLike | None = None,
    replace: bool = False,
    progress: Callable | None = None,
) -> ProbeSet:
    """The probe set: ``n`` images of ``folder`` (recursive; ``None``: the embedded default),
    centre-cropped to ``size``×``size``; written to ``space`` when given."""
    from .probe import build_probe as _build

    probe = _build(folder, size=size, n=n, seed=seed, progress=progress)
    if space is not None:
        _space(space).write_probe(probe, replace=replace)
    return probe


def method_parameters(
    methods: Sequence[str],
    epsilon: float | None = None,
    lrp_preset: str | None = None,
    lrp_rules: str | Path | Mapping[str, Any] | None = None,
    reference: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Per-method parameters from the common ones: ``epsilon`` (>= 0) goes to every method that
    takes one (elrp, lrp), ``lrp_preset``/``lrp_rules`` to lrp, ``reference`` (model, gray,
    black: what the input is measured from) to grad_input and elrp."""
    from .attribution import METHODS
    from .errors import OnnxAttrError

    if epsilon is not None and not epsilon >= 0:  # NaN too
        raise OnnxAttrError(f"`epsilon={epsilon}` must be a number >= 0 (default 1e-4)")

    out: dict[str, dict[str, Any]] = {}
    for m in methods:
        takes = METHODS[m].defaults if m in METHODS else {}
        rules = lrp_rules if lrp_rules is None or isinstance(lrp_rules, Mapping) else str(lrp_rules)
        params = {k: v for k, v in (("epsilon", epsilon), ("preset", lrp_preset), ("rules", rules),
                                    ("reference", reference))
                  if v is not None and k in takes}
        if params:
            out[m] = params
    return out


def nodes(model: str | Path) -> list[NodeInfo]:
    """The ONNX model's nodes: name, op type, output tensors and shapes, and which one is the
    suggested encoder node (``candidate``, with its reason): what ``encoder_node`` takes."""
    from .onnxgraph import graph

    return graph.list_nodes(graph.load(model))


def add(
    space: SpaceLike,
    model: str | Path,
    encoder_node: str | None = None,
    *,
    name: str | None = None,
    preprocessing: Preprocessing | Mapping[str, Any] | str | None = None,
    methods: Sequence[str] | None = None,
    epsilon: float | None = None,
    lrp_preset: str | None = None,
    lrp_rules: str | Path | Mapping[str, Any] | None = None,
    reference: str | None = None,
    method_params: Mapping[str, Mapping[str, Any]] | None = None,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    rtol: float = 1e-3,
    overwrite: bool = False,
    metadata: Mapping[str, Any] | None = None,
    map_size: int | None = None,
    storage: MapStorage | None = None,
    memory_mb: int | None = DEFAULT_MEMORY_MB,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    fast: bool = True,
) -> AddResult:
    """Truncate the ONNX ``model`` at ``encoder_node``, fix it up, convert and verify it against
    onnxruntime, attribute every probe image with ``methods`` and store the maps in ``space``.

    ``preprocessing``: a preset name ("imagenet", ...), a dict of
    :class:`~onnxattr.preprocess.Preprocessing` fields (plus an optional "preset"), or one;
    unset fields come from the model's input shape. ``reference``: what grad_input and elrp
    measure the input from (see `attribution.methods.REFERENCES`). ``method_params`` (per method)
    override ``epsilon``/``lrp_preset``/``lrp_rules``/``reference``. ``map_size``/``storage``: how maps are stored (side,
    dtype); ``memory_mb``: the budget the batch size (at most ``batch_size``) is chosen to fit
    (``None``: ``batch_size`` as given). ``fast``: BN folded and channels-last where the maps equal
    the exact path's on the first batch (else it falls back and says so); False: the net as converted.
    """
    from .pipeline import DEFAULT_METHODS, add_model

    methods = list(DEFAULT_METHODS if methods is None else methods)  # [] is refused by add_model
    params = method_parameters(methods, epsilon, lrp_preset, lrp_rules, reference)
    for m, p in (method_params or {}).items():
        params.setdefault(m, {}).update(p)
    if isinstance(preprocessing, str):
        preprocessing = {"preset": preprocessing}
    return add_model(
        _path(space), model, encoder_node=encoder_node, name=name,
        preprocessing=dict(preprocessing) if isinstance(preprocessing, Mapping) else preprocessing,
        methods=methods, method_params=params, batch_size=batch_size, device=device, rtol=rtol,
        overwrite=overwrite, metadata=dict(metadata or {}), progress=progress, log=log,
        map_size=map_size, memory_mb=memory_mb, fast=fast,
        **({"storage": storage} if storage is not None else {}),
    )


def is_manifest(path: str | Path) -> bool:
    """Whether ``path`` names a manifest of models (.toml, .csv, .json) rather than a model."""
    from .cluster import is_manifest as _is_manifest

    return _is_manifest(path)


def add_many(space: SpaceLike, manifest: str | Path, *, workers: int | None = None,
             address: str | None = None, overwrite: bool = False,
             storage: MapStorage | None = None, log: Callable[[str], None] = print,
             **options: Any) -> ManyResult:
    """Add every model of ``manifest`` not yet in ``space``, as Ray tasks that write their
    segments in parallel (``workers``: tasks on this machine, 0: one after another without
    Ray; ``address``: a running Ray cluster); ``options`` as for :func:`add` (methods,
    method_params, batch_size, device, rtol, map_size, memory_mb). A model that fails is
    reported in the result and the others go on."""
    from .cluster import add_many as _add_many
    from .cluster import read_manifest
    from .space import DEFAULT_STORAGE

    return _add_many(_path(space), read_manifest(manifest), workers=workers, address=address,
                     overwrite=overwrite, storage=storage or DEFAULT_STORAGE, log=log, **options)


def transfer_target(space: SpaceLike, data: str | Path, *, name: str | None = None,
                    teacher: str | Path | None = None, teacher_node: str | None = None,
                    teacher_preset: str | None = None, size: int | None = None,
                    log: Callable[[str], None] | None = None) -> TargetTask:
    """A labelled target task from ``data`` (class subfolders, or images with a .npy label
    each; with a ``teacher`` ONNX model, its outputs on any images are the labels), the images
    centre-cropped to ``size`` (default: the space's probe size)."""
    from .errors import OnnxAttrError
    from .space import ModelSpace
    from .transfer import load_folder, teacher_target

    if teacher_node is not None and teacher is None:
        raise OnnxAttrError("`teacher_node` needs `teacher` (an ONNX model)")
    if size is None:
        sp = ModelSpace(_path(space))
        size = sp.read_probe().size if sp.has_probe() else 224
    if teacher is not None:
        pre = {"preset": teacher_preset} if teacher_preset else None
        return teacher_target(data, teacher, teacher_node, size, pre, name=name)
    return load_folder(data, size, name=name, progress=log)


def measure_transfer(space: SpaceLike, target: TargetTask,
                     models: Sequence[str] | Sequence[SpaceSource] | None = None, *,
                     out: str | Path | None = "transfers.csv",
                     json_out: str | Path | None = None, cache: str | Path | None = None,
                     use_cache: bool = True, seed: int = 0, batch_size: int = 64,
                     log: Callable[[str], None] | None = None) -> TransferResult:
    """Measured transfer of every source of the space (or ``models``) to ``target``: the frozen
    encoder and a closed-form linear head, scored on a held-out split (the benchmark's oracle
    recipe); with ``out``, merged into that labelled CSV (an oracle `evaluate` reads).
    ``models``: names, or sources already checked (``transfer.load_sources``)."""
    from .transfer import measure_transfer as _measure
    from .transfer import write_outputs
    from .transfer.sources import check_batch_size, check_outputs

    check_batch_size(batch_size)
    check_outputs(out, json_out, "transfers")
    sources = _sources(space, models)
    res = _measure(_path(space), [target], sources, cache=cache, use_cache=use_cache,
                           seed=seed, batch_size=batch_size, log=log)
    if out is not None:
        res.written = write_outputs(res, out, json_out)
    return res


def estimate_transfer(space: SpaceLike, target: TargetTask, estimates: Sequence[str],
                      models: Sequence[str] | Sequence[SpaceSource] | None = None, *,
                      out: str | Path | None = "estimates.csv", json_out: str | Path | None = None,
                      bins: int = 8, max_samples: int = 4000, seed: int = 0,
                      batch_size: int = 64, log: Callable[[str], None] | None = None
                      ) -> EstimateResult:
    """Label-based transferability estimates (logme, leep, nce, hscore, sfda) of every source
    for ``target``, from frozen features and the labels, without fitting a head."""
    from .transfer import estimate_transfer as _estimate
    from .transfer import write_estimates
    from .transfer.sources import check_batch_size, check_outputs

    check_batch_size(batch_size)
    check_outputs(out, json_out, "estimates")
    sources = _sources(space, models)
    res = _estimate(_path(space), target, list(estimates), sources, bins=bins,
                    max_samples=max_samples, seed=seed, batch_size=batch_size, log=log)
    if out is not None:
        res.written = write_estimates(res, out, json_out)
    return res


def _sources(space: SpaceLike, models: Sequence[str] | Sequence[SpaceSource] | None
             ) -> list[SpaceSource]:
    """The transfer sources: every (or each named) model of the space, checked (its ONNX file
    where the space says, with the recorded sha256), or sources checked already."""
    from .transfer import load_sources
    from .transfer.sources import SpaceSource

    if models and all(isinstance(m, SpaceSource) for m in models):
        return list(models)
    return load_sources(_path(space), [str(m) for m in models] if models else None)


def bench(out: str | Path = "bench", *, quick: bool = False, committed: bool = False,
          world: int = 0, recipe: int = 3, log: Callable[[str], None] = print) -> BenchResult:
    """Regenerate the mini-Taskonomy benchmark in ``out`` (docs/benchmark.md): scenes, encoders
    (or world ``world``'s committed ones, with their own recipe), space, measured oracle, sanity
    figures and every estimator's scores; ``world`` seeds every scene set and initial weight,
    ``recipe`` is the training recipe (3: standardised regression targets; 2: raw)."""
    from dataclasses import replace

    from .benchmark.run import run_benchmark
    from .benchmark.world import QUICK, Config

    cfg = replace(QUICK if quick else Config(), world=world, recipe=recipe)
    return run_benchmark(Path(out), cfg, use_committed=committed, log=log)


def check(space: SpaceLike) -> CheckReport:
    """Verify a whole space (format, structure, checksums, finite values, probe digest) without
    changing it: what is damaged, what is intact."""
    from .integrity import check_space

    return check_space(_path(space))


def salvage(space: SpaceLike, out: str | Path, *, overwrite: bool = False) -> CheckReport:
    """Copy the probe set and every intact model of ``space`` into the new space ``out``
    (``space`` is only read); the returned report says which models were left behind."""
    from .integrity import salvage as _salvage

    return _salvage(_path(space), out, overwrite=overwrite)


def migrate(space: SpaceLike, *, backup: bool = True) -> tuple[int, Path | None]:
    """Convert a single-file space (format 1-2) in place into per-model segments (format 3),
    which this onnxattr writes; returns (models converted, the old file's backup or None)."""
    from .integrity import migrate as _migrate

    return _migrate(_path(space), backup=backup)


def sketch(space: SpaceLike, methods: Sequence[str] | None = None, *, dims: int = 1024
           ) -> dict[str, list[str]]:
    """Store the map sketches (estimator ``sketch:METHOD``, ``dims`` per probe image) that models
    lack; returns model -> methods sketched."""
    from .analysis.sketch import add_sketches

    return add_sketches(_path(space), methods, dims)


def check_features(space: SpaceLike, models: Sequence[str] | None = None, *,
                   recompute: bool = False, batch_size: int = 16,
                   device: str | torch.device = "cpu",
                   log: Callable[[str], None] | None = None) -> list[FeatureCheck]:
    """How each model's stored features were pooled (ok, wrong, unknown); ``recompute``: first
    recompute them from the ONNX files, for the named ``models`` or else every wrong one."""
    from .features import check_features as _check
    from .features import recompute_features

    if recompute:
        todo = list(models) if models else [
            c.name for c in _check(_path(space)) if c.status == "wrong"]
        recompute_features(_path(space), todo, batch_size, device, log=log)
    return _check(_path(space), models)


def models(space: SpaceLike) -> list[str]:
    """Names of the models in ``space``."""
    return [r.name for r in _space(space).models()]


def methods() -> list[str]:
    """Registered attribution methods."""
    from .attribution import list_methods

    return list_methods()


def estimators(space: SpaceLike | None = None) -> list[str]:
    """Estimator names: those with data in ``space`` (the defaults of :func:`evaluate` and
    :func:`report`), else every registered one."""
    from .analysis.estimators import available_estimators, list_estimators
    from .analysis.selection import with_default

    if space is None:
        return [e.name for e in list_estimators()]
    return with_default(_path(space), available_estimators(_path(space)))


def default_estimator(space: SpaceLike) -> str:
    """The estimator used where none is named: :data:`~onnxattr.analysis.selection.DEFAULT_ESTIMATOR`
    when ``space`` has what its parts read, else an error naming the space's estimators."""
    from .analysis.estimators import available_estimators
    from .analysis.selection import DEFAULT_ESTIMATOR, default_needs, with_default
    from .errors import OnnxAttrError

    names = available_estimators(_path(space))
    if DEFAULT_ESTIMATOR in with_default(_path(space), names):
        return DEFAULT_ESTIMATOR
    bases, grid = default_needs()
    probe = f"; probes of at least {grid} px" if grid else ""
    raise OnnxAttrError(
        f"{_path(space)} lacks what the default estimator {DEFAULT_ESTIMATOR} reads (the data "
        f"of {', '.join(bases)} in at least two models{probe}); name one with "
        f"`estimator=NAME`, available: "
        f"{', '.join(names) or '(none: add models)'}"
    )


def affinity(
    space: SpaceLike,
    estimator: str | None = None,
    models: Sequence[str] | None = None,
    *,
    use_cache: bool = True,
    memory_bytes: int | None = None,
    progress: bool = False,
    **params: Any,
) -> LabelledMatrix:
    """Model × model affinity (higher = more similar) of ``estimator`` ("elrp", "cka",
    "depara:saliency", ...; :func:`estimators` lists them; ``None``: :func:`default_estimator`);
    ``params`` are estimator parameters
    (``lam``, ``svcca_keep``, ...). Pairs already computed are read from the space's cache."""
    from .analysis.distances import DEFAULT_MEMORY_BYTES
    from .analysis.estimators import compute_affinity

    estimator = estimator or default_estimator(space)
    matrix, _ = compute_affinity(_path(space), estimator, models, use_cache=use_cache,
                                 memory_bytes=memory_bytes or DEFAULT_MEMORY_BYTES,
                                 progress=progress, **params)
    return matrix


def distances(space: SpaceLike, estimator: str | None = None, models: Sequence[str] | None = None,
              **kwargs: Any) -> LabelledMatrix:
    """The paper's distance d = Np / Σk cos, capped at 100; an estimator without one (a
    combination, a ``+hub``/``+csls`` affinity: :func:`~onnxattr.analysis.distances.has_distance`)
    is an error: use :func:`affinity`."""
    return affinity(space, estimator, models, **kwargs).distance()


def stability(space: SpaceLike, estimator: str | None = None,
              models: Sequence[str] | None = None, *, bootstrap: int = 20, seed: int = 0,
              **params: Any) -> Stability:
    """How sure ``estimator``'s rankings are (``None``: :func:`default_estimator`): 95%
    intervals of every affinity and rank over ``bootstrap`` (at least 2) probe resamples, and how
    alike two disjoint halves of the probe set rank the sources. ``params``: estimator
    parameters, as for :func:`affinity`."""
    from .analysis.stability import ranking_stability

    return ranking_stability(_path(space), estimator or default_estimator(space), models,
                             n_boot=bootstrap, seed=seed, **params)


@dataclass(frozen=True)
class Neighbour:
    """A source model in a ranking: its name, distance (None where the estimator has none),
    affinity to the target, and whether the probe cannot tell it apart from the source above it
    (``tied``; None when the ranking was not resampled: :mod:`.analysis.confidence`)."""

    name: str
    distance: float | None
    affinity: float
    tied: bool | None = None


def rank(source: SpaceLike | LabelledMatrix, target: str, estimator: str | None = None, *,
         top: int = 0, bootstrap: int = 0, seed: int = 0, **params: Any) -> list[Neighbour]:
    """Source models for ``target``, closest first (``top`` > 0: only the first ``top``), from a
    matrix or from ``estimator`` on a space (``None``: :func:`default_estimator`). With
    ``bootstrap`` probe resamples (a space only), each says whether it can be told apart from
    the one above (the ≈ of `onnxattr rank`)."""
    from .analysis.confidence import source_ties
    from .analysis.distances import LabelledMatrix, ranking
    from .analysis.stability import check_bootstrap
    from .errors import OnnxAttrError

    check_bootstrap(bootstrap)
    if bootstrap and isinstance(source, LabelledMatrix):
        raise OnnxAttrError("`bootstrap` resamples the probe images of a space; give the space, "
                            "not a matrix")
    matrix = source if isinstance(source, LabelledMatrix) else affinity(source, estimator, **params)
    aff = matrix.affinity()
    dist = matrix.distance() if matrix.has_distance else None
    i = matrix.index(target)
    tied: dict[str, bool] = {}
    if bootstrap:
        ties = source_ties(stability(source, matrix.estimator, bootstrap=bootstrap, seed=seed,
                                     **params))
        tied = {n: t for n, _, t in ties.ranked(target)}
    rows = ranking(matrix, target)
    rows = rows[:top] if top > 0 else rows
    return [Neighbour(n, None if dist is None else float(dist.values[i, matrix.index(n)]),
                      float(aff.values[i, matrix.index(n)]), tied.get(n)) for n, _ in rows]


def agreement(space: SpaceLike, target: str, compare: Sequence[str] | None = None, *,
              use_cache: bool = True, **params: Any) -> Disagreement:
    """Whether the estimators ``compare`` (default: the default estimator and the paper's
    saliency, grad_input and elrp, those the space has data for) rank ``target``'s sources
    alike: their first sources, top 3 and lowest pairwise Kendall τ (the ≠ of `onnxattr rank`)."""
    from .analysis.confidence import comparison_estimators, disagreement

    names = list(dict.fromkeys(compare or comparison_estimators(estimators(space))))
    return disagreement([affinity(space, n, use_cache=use_cache, **params) for n in names], target)


def evaluate(
    source: SpaceLike | LabelledMatrix | Sequence[LabelledMatrix],
    oracle: str | Path | Oracle,
    estimators: Sequence[str] | None = None,
    *,
    top: int = 5,
    mapping: Mapping[str, str] | None = None,
    families: Mapping[str, str] | None = None,
    use_cache: bool = True,
    progress: bool = False,
    **params: Any,
) -> list[Evaluation]:
    """P@K and R@K (K = 1..N-1), the random and oracle curves and mean Spearman against the
    measured transfers ``oracle`` (CSV: target rows × source columns, or an Oracle): one
    :class:`~onnxattr.analysis.evaluation.Evaluation` per matrix, or per estimator of a space
    (default: every one with data). ``families`` (oracle name -> family, e.g. its task) ranks
    families, each counted once by its best member, so that one task's twins do not fill the
    relevant set."""
    from .analysis.distances import LabelledMatrix
    from .analysis.estimators import available_estimators
    from .analysis.evaluation import evaluate as _evaluate
    from .analysis.evaluation import read_oracle
    from .analysis.selection import with_default

    orc = read_oracle(oracle) if isinstance(oracle, (str, Path)) else oracle
    if isinstance(source, LabelledMatrix):
        mats = [source]
    elif isinstance(source, Sequence) and not isinstance(source, str):
        mats = list(source)
    else:
        names = list(estimators) if estimators else with_default(
            _path(source), available_estimators(_path(source)))
        mats = [affinity(source, e, use_cache=use_cache, progress=progress, **params)
                for e in names]
    return [_evaluate(m, orc, top=top, mapping=mapping, families=families) for m in mats]


@dataclass(frozen=True)
class Tree:
    """An agglomerative similarity tree of models: its scipy linkage matrix, the models in
    leaf order, and the Newick text."""

    names: list[str]
    linkage: Any  # numpy (N-1, 4) scipy linkage matrix
    leaves: list[str]
    newick: str


def tree(source: SpaceLike | LabelledMatrix, estimator: str | None = None, *,
         linkage: str = "single", on: str = "rows", out: str | Path | None = None,
         **params: Any) -> Tree:
    """The similarity tree of the models of a matrix or of ``estimator`` on a space (``None``:
    :func:`default_estimator`): ``linkage`` over Euclidean distances between affinity rows (the
    paper's code, ``on="rows"``) or over max(A) − A (``on="matrix"``); ``out``: also draw the
    dendrogram (.png/.svg)."""
    from .analysis import plots, trees
    from .analysis.distances import LabelledMatrix

    trees.check_linkage(linkage, on)
    if out is not None:
        plots.check_image_path(out)
    matrix = source if isinstance(source, LabelledMatrix) else affinity(source, estimator, **params)
    z = trees.linkage(matrix, linkage, on)
    if out is not None:
        plots.save(plots.dendrogram_figure(z, matrix.names, f"{matrix.estimator} ({linkage})"),
                   out)
    return Tree(list(matrix.names), z, [matrix.names[i] for i in trees.leaf_order(z)],
                trees.to_newick(z, matrix.names))


def heatmap(source: SpaceLike | LabelledMatrix, out: str | Path, estimator: str | None = None,
            *, linkage: str = "single", **params: Any) -> Path:
    """Draw the affinity matrix (.png/.svg), rows and columns in the similarity tree's order."""
    from .analysis import plots, trees
    from .analysis.distances import LabelledMatrix

    trees.check_linkage(linkage)
    plots.check_image_path(out)
    matrix = source if isinstance(source, LabelledMatrix) else affinity(source, estimator, **params)
    aff = matrix.affinity()
    plots.save(plots.heatmap_figure(aff, trees.leaf_order(trees.linkage(aff, linkage))), out)
    return Path(out)


def report(
    space: SpaceLike,
    out: str | Path = "report.html",
    oracle: str | Path | Oracle | None = None,
    estimators: Sequence[str] | None = None,
    **kwargs: Any,
) -> Path:
    """One self-contained HTML page: per estimator a heatmap, a similarity tree and the rankings;
    with an ``oracle`` the evaluation of every estimator. ``estimators`` default to every one of
    the space, the default estimator first. ``kwargs``: ``mapping``, ``top``, ``linkage``,
    ``use_cache``, ``progress`` and estimator parameters."""
    from .analysis.estimators import available_estimators
    from .analysis.report import write_report
    from .analysis.selection import DEFAULT_ESTIMATOR, with_default
    from .analysis.stability import check_bootstrap
    from .analysis.trees import check_linkage

    check_bootstrap(kwargs.get("bootstrap", 0))
    check_linkage(kwargs.get("linkage", "single"))
    names = (list(estimators) if estimators
             else with_default(_path(space), available_estimators(_path(space))))
    names.sort(key=lambda n: n != DEFAULT_ESTIMATOR)  # stable: the default leads, the rest as listed
    return write_report(_path(space), out, oracle, names, **kwargs)


def explore(
    space: SpaceLike,
    out: str | Path = "explorer.html",
    oracle: str | Path | Oracle | None = None,
    estimators: Sequence[str] | None = None,
    **kwargs: Any,
) -> ExplorerResult:
    """The interactive explorer: one self-contained HTML page (opens from disk) to pick a
    target, read its ranked sources per estimator with probe-resampling intervals, compare two
    models' maps and browse the tree and heatmap; with an ``oracle`` the measured transfers
    beside each ranking. ``kwargs``: ``mapping``, ``top``, ``top_k``, ``n_images``, ``bootstrap``,
    ``linkage``, ``use_cache``, ``progress`` and estimator parameters."""
    from .analysis.explorer import write_explorer
    from .analysis.stability import check_bootstrap
    from .analysis.trees import check_linkage

    check_bootstrap(kwargs.get("bootstrap", 0))
    check_linkage(kwargs.get("linkage", "single"))
    return write_explorer(_path(space), out, oracle, list(estimators) if estimators else None,
                          **kwargs)
