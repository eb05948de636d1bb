"""Transferability estimators over a model space, one name-keyed registry.

Built in:

* ``cosine`` — the paper's estimator: mean per-image cosine of two models' attribution maps. Every
  attribution method stored in the space ("saliency", "grad_input", "elrp", "lrp", ...) is usable
  by its bare name, meaning ``cosine:<method>``;
* baselines on the stored encoder outputs ``/models/<name>/features`` (Np, D):
  ``svcca`` (Raghu et al. 2017, the paper's comparison), ``cka`` (linear CKA, Kornblith et al.
  2019), ``rsa`` (Dwivedi & Roig 2019: Spearman correlation of 1 - Pearson RDMs), ``relation``
  (Spearman correlation of the probe-image relation graphs: cosine of features per image pair);
* ``sketch:<method>`` (not in the defaults): the cosine estimator on the per-image random-projection
  sketches that `add` stores (:mod:`onnxattr.analysis.sketch`): an approximation for large spaces
  that reads ~1,000 numbers per image instead of S²;
* ``depara`` (Song et al., CVPR 2020): attribution similarity + lam * relation-graph similarity,
  as in the authors' reference implementation (KamalEngine ``graph_similarity``, lam = 1).
  ``depara:<method>`` picks the attribution method (default: grad_input, else elrp, lrp, saliency).
* directed ones (not in the defaults; :mod:`onnxattr.analysis.directed`), A[target, source] !=
  A[source, target]: ``predict`` (cross-validated ridge predictivity of the target's encoder
  outputs from the source's) and ``rankme`` (the source's effective rank, a source-quality term
  for ``combine:``).

A name as users write it is ``BASE[:METHOD][+map options][+hub|+cslsK]`` (map options and
corrections: :mod:`onnxattr.analysis.map_compare`) or ``combine:EST=W,EST=W``. All are affinities
(higher = more similar) with row = target, column = source. The symmetric ones are
computed/cached pairwise by :func:`onnxattr.analysis.distances.pairwise_matrix`, so all share
incremental updates; the directed ones are computed in full each time and take no correction.

Adding an estimator is one decorated function, in any module imported before use::

    @register_estimator("powcka", kind="features", description="linear CKA of |features|^power")
    def powcka(power: float = 2.0) -> FeatureEstimator:
        return FeatureEstimator("powcka", lambda x: cka_signature(np.abs(x) ** power),
                                key_params=f".p{power:g}", params={"power": power})

* ``kind`` says what it reads: ``"features"`` (encoder outputs), ``"maps"`` (attribution maps of
  one method) or ``"maps+features"``. A map estimator's function takes ``(method, comparison,
  ...)``: the method users pick with ``NAME:METHOD`` (without it, the first of
  :data:`DEFAULT_MAP_METHODS` in the space) and the :class:`~.map_compare.MapComparison` their
  ``+options`` ask for.
* Its parameters are the function's keyword arguments with defaults: ``compute_affinity(...,
  power=3)`` and the CLI's ``--param power=3`` reach it (each estimator receives only the
  parameters it declares, so one call can carry parameters for several).
* It returns a :class:`~.distances.PairwiseEstimator` (signatures per model and data part,
  combined pairwise and cached under its ``cache_key``: put every parameter that changes values
  into the key), a :class:`Blend` (a weighted sum of such estimators, each cached on its own), or,
  registered with ``directed=True``, a :class:`~.directed.DirectedEstimator`.
  Probe-resampling intervals (:mod:`.stability`) support :class:`MapCosine`,
  :class:`~.sketch.MapSketch` and :class:`FeatureEstimator` terms.
* Registration order is listing order (:func:`available_estimators`, hence the defaults of
  ``evaluate`` and ``report``); ``listed=False`` keeps a variant out of the defaults.
  :func:`list_estimators` and ``onnxattr estimators`` list the registry.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OnnxAttrError
from ..registry import Registry
from ..space_reader import SpaceReader, read_space
from .directed import (
    DirectedEstimator,
    coverage_matrix,
    directed_matrix,
    effective_rank,
    predictivity_matrix,
)
from .distances import (
    DEFAULT_MEMORY_BYTES,
    LabelledMatrix,
    PairwiseEstimator,
    normalise_rows,
    pairwise_matrix,
)
from .map_compare import (
    EstimatorSpec,
    MapComparison,
    correct,
    describe_correction,
    parse_estimator,
)
from .representations import (
    FeatureEstimator,
    cka_signature,
    gram,
    relation_signature,
    rsa_signature,
    svcca_pair,
    svcca_signature,
)
from .sketch import MapSketch

#: Display order of the paper's attribution methods (others follow, alphabetically).
METHOD_ORDER = ("saliency", "grad_input", "elrp", "lrp")
#: The method a map estimator uses when none is given (``depara`` = ``depara:grad_input``).
DEFAULT_MAP_METHODS = ("grad_input", "elrp", "lrp", "saliency")


# --------------------------------------------------------------------------- attribution maps
class MapCosine:
    """Mean over probe images of the cosine of two models' (S, S) attribution maps.

    Signature of a model for an image chunk = its per-image unit-normalised maps / sqrt(Np),
    concatenated, so one matrix product of two signatures sums the cosines and divides by Np
    (float32 products, float64 sums over chunks).
    Zero maps (and non-finite ones) give cosine 0.
    """

    def __init__(self, method: str, comparison: MapComparison | None = None) -> None:
        self.method = method
        self.comparison = comparison or MapComparison()
        self.name = "+".join([method, *self.comparison.tokens()])
        self.cache_key = f"maps.{self.name}"
        self.params = {"method": method, **self.comparison.params()}

    def n_images(self, reader: SpaceReader, name: str) -> int:
        return reader.map_shape(name, self.method)[0]

    def verify(self, reader: SpaceReader, name: str) -> None:
        reader.verify_maps(name, self.method)

    def models_with_data(self, reader: SpaceReader) -> list[str]:
        return [m for m in reader.names() if reader.has_maps(m, self.method)]

    def parts(self, reader: SpaceReader, names: Sequence[str], memory_bytes: int) -> list[slice]:
        shapes = {n: reader.map_shape(n, self.method) for n in names}
        if len(set(shapes.values())) != 1:
            detail = ", ".join(f"{n}: {s}" for n, s in shapes.items())
            raise OnnxAttrError(f"maps {self.method!r} differ in shape ({detail}); "
                                "all models must be attributed on the same probe set")
        refs = {n: reader.map_reference(n, self.method) for n in names}
        if len(set(refs.values())) > 1:
            groups = {r: [n for n in names if refs[n] == r] for r in sorted(set(refs.values()))}
            detail = "; ".join(f"reference {r}: {', '.join(ns)}" for r, ns in groups.items())
            raise OnnxAttrError(
                f"maps {self.method!r} measure the input from different references ({detail}), "
                f"so they do not compare; re-add the odd ones with `--reference` (API: "
                f"`reference=`) as the others")
        shape = next(iter(shapes.values()))
        n_img, per_img = shape[0], math.prod(shape[1:]) * 4
        # all models' maps for one chunk take about a quarter of the budget
        chunk = max(1, min(n_img, memory_bytes // 4 // max(1, per_img * len(names))))
        return [slice(k, min(k + chunk, n_img)) for k in range(0, n_img, chunk)]

    def signature_bytes(self, reader: SpaceReader, name: str, part: slice) -> int:
        shape = reader.map_shape(name, self.method)
        return (part.stop - part.start) * math.prod(shape[1:]) * 4

    def stack(self, reader: SpaceReader, names: Sequence[str], part: slice) -> np.ndarray:
        """(models, chunk·S·S) float32: each image's map divided by its norm · sqrt(Np), read and
        scaled in place in one preallocated block (no per-model copies). The maps are read as
        stored: a low-precision map's per-image scale cancels in its norm."""
        shape = reader.map_shape(names[0], self.method)
        if not self.comparison.is_reference:
            return self._stack_transformed(reader, names, part, shape[0])
        n_img, n_pix = part.stop - part.start, math.prod(shape[1:])
        block = np.empty((len(names), n_img * n_pix), dtype=np.float32)
        for i, name in enumerate(names):
            x = block[i].reshape(n_img, *shape[1:])
            reader.stored_maps(name, self.method, part, out=x)
            x = x.reshape(n_img, n_pix)
            norm = np.linalg.norm(x, axis=1, keepdims=True) * np.float32(math.sqrt(shape[0]))
            ok = norm > 0
            np.divide(x, norm, out=x, where=ok)
            x[~ok[:, 0]] = 0.0  # zero (or non-finite) map: cosine 0
        return block

    def _stack_transformed(self, reader: SpaceReader, names: Sequence[str], part: slice,
                           n_total: int) -> np.ndarray:
        rows = []
        for name in names:
            x = self.comparison.transform(reader.stored_maps(name, self.method, part),
                                          _input_size(reader, name))
            rows.append((normalise_rows(x) / np.float32(math.sqrt(n_total))).ravel())
        return np.stack(rows)

    def combine(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return gram(a, b)


def _input_size(reader: SpaceReader, name: str) -> tuple[int, int] | None:
    """The model's input (H, W) as its stored preprocessing records it (None if not recorded)."""
    raw = reader.attrs(name).get("preprocessing", "{}")
    try:
        size = json.loads(raw).get("input_size")
    except (json.JSONDecodeError, AttributeError):
        return None
    return (int(size[0]), int(size[1])) if size else None


# --------------------------------------------------------------------------- registry
KINDS = ("maps", "features", "maps+features")


@dataclass(frozen=True)
class Blend:
    """A weighted sum of pairwise estimators' matrices (each cached on its own), e.g. DEPARA's
    map cosine + lam * relation-graph similarity; ``label`` names the result."""

    label: str
    terms: Sequence[tuple[PairwiseEstimator, float]]


Factory = Callable[..., Any]  # returns a PairwiseEstimator, a Blend or a DirectedEstimator


@dataclass(frozen=True)
class RegisteredEstimator:
    """One registry entry, as :func:`register_estimator` records it."""

    name: str
    kind: str  # one of KINDS
    description: str
    factory: Factory
    params: Mapping[str, Any] = field(default_factory=dict)  # parameter -> default
    listed: bool = True
    directed: bool = False  # A[target, source] != A[source, target]: no cache, no correction

    @property
    def needs_maps(self) -> bool:
        return "maps" in self.kind.split("+")

    @property
    def needs_features(self) -> bool:
        return "features" in self.kind.split("+")


#: Every registered estimator by name, in registration (= listing) order.
ESTIMATORS: Registry[RegisteredEstimator] = Registry("estimator")
#: The map estimator that a bare attribution-method name ("elrp") stands for.
DEFAULT_MAP_ESTIMATOR = "cosine"
_MAP_ARGS = ("method", "comparison")


def register_estimator(name: str, *, kind: str, description: str, listed: bool = True,
                       directed: bool = False) -> Callable[[Factory], Factory]:
    """Decorator: register ``factory`` as estimator ``name`` (see the module docstring)."""
    if kind not in KINDS:
        raise ValueError(f"estimator {name!r}: kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if any(c in name for c in ":+=,@") or name == "combine":
        raise ValueError(f"estimator name {name!r} must not contain ':', '+', '=', ',' or '@'")

    def decorate(factory: Factory) -> Factory:
        sig = list(inspect.signature(factory).parameters.values())
        if "maps" in kind.split("+"):
            if tuple(p.name for p in sig[:2]) != _MAP_ARGS:
                raise ValueError(f"map estimator {name!r} must take (method, comparison, ...)")
            sig = sig[2:]
        missing = [p.name for p in sig if p.default is inspect.Parameter.empty]
        if missing:
            raise ValueError(f"estimator {name!r}: parameters {', '.join(missing)} need defaults")
        ESTIMATORS.add(name, RegisteredEstimator(name, kind, description, factory,
                                                 {p.name: p.default for p in sig}, listed,
                                                 directed))
        return factory

    return decorate


def list_estimators() -> list[RegisteredEstimator]:
    """Every registered estimator, in registration (= listing) order."""
    return list(ESTIMATORS.values())


def estimator_params() -> dict[str, list[str]]:
    """Parameter name -> the estimators that declare it."""
    out: dict[str, list[str]] = {}
    for reg in ESTIMATORS.values():
        for p in reg.params:
            out.setdefault(p, []).append(reg.name)
    return out


@dataclass(frozen=True)
class EstimatorInfo:
    name: str
    data: str  # "maps" or "features" or "maps+features"
    description: str


# --------------------------------------------------------------------------- built-in estimators
@register_estimator(DEFAULT_MAP_ESTIMATOR, kind="maps",
                    description="mean per-image cosine of two models' attribution maps "
                                "(Song et al. 2019)")
def cosine(method: str, comparison: MapComparison) -> PairwiseEstimator:
    return MapCosine(method, comparison)


@register_estimator("sketch", kind="maps", listed=False,
                    description="approximate map cosine from per-image random-projection "
                                "sketches (large spaces; `sketch_dims` of those stored)")
def sketch(method: str, comparison: MapComparison, sketch_dims: int = 0) -> PairwiseEstimator:
    if not comparison.is_reference:
        raise OnnxAttrError(f"sketch:{method}{''.join('+' + t for t in comparison.tokens())}: "
                            "map options do not apply to sketches; use the exact method name")
    return MapSketch(method, sketch_dims)


@register_estimator("svcca", kind="features",
                    description="SVCCA: mean canonical correlation of top SVD directions of "
                                "encoder outputs")
def svcca(svcca_keep: float = 0.99, svcca_max_dims: int = 50) -> PairwiseEstimator:
    return FeatureEstimator(
        "svcca", lambda x: svcca_signature(x, svcca_keep, svcca_max_dims), svcca_pair,
        key_params=f".keep{svcca_keep:g}.max{svcca_max_dims}",
        params={"keep": svcca_keep, "max_dims": svcca_max_dims})


@register_estimator("cka", kind="features",
                    description="linear CKA of encoder outputs (Kornblith et al. 2019)")
def cka() -> PairwiseEstimator:
    return FeatureEstimator("cka", cka_signature)


@register_estimator("rsa", kind="features",
                    description="RSA: Spearman of 1-Pearson RDMs of encoder outputs "
                                "(Dwivedi & Roig 2019)")
def rsa() -> PairwiseEstimator:
    return FeatureEstimator("rsa", rsa_signature)


@register_estimator("relation", kind="features",
                    description="Spearman of probe-image relation graphs (feature cosines)")
def relation() -> PairwiseEstimator:
    return FeatureEstimator("relation", relation_signature)


@register_estimator("depara", kind="maps+features",
                    description="DEPARA: attribution + lambda * relation-graph similarity "
                                "(Song et al. 2020)")
def depara(method: str, comparison: MapComparison, lam: float = 1.0) -> Blend:
    node = MapCosine(method, comparison)
    label = f"depara:{node.name}" + ("" if lam == 1.0 else f"@{lam:g}")
    return Blend(label, [(node, 1.0), (relation(), lam)])


@register_estimator("predict", kind="features", listed=False, directed=True,
                    description="directed: out-of-fold R² of the target's encoder outputs "
                                "predicted from the source's by ridge (GCV penalty)")
def predict(predict_folds: int = 5) -> DirectedEstimator:
    return DirectedEstimator("predict", lambda xs: predictivity_matrix(xs, predict_folds),
                             {"folds": predict_folds})


@register_estimator("coverage", kind="features", listed=False, directed=True,
                    description="directed: the source's mean predict R² over every other model "
                                "as target (how much of the other encoders it holds), the same "
                                "for every target")
def coverage(predict_folds: int = 5) -> DirectedEstimator:
    return DirectedEstimator("coverage", lambda xs: coverage_matrix(xs, predict_folds),
                             {"folds": predict_folds})


@register_estimator("rankme", kind="features", listed=False, directed=True,
                    description="directed: the source's effective rank of its encoder outputs "
                                "(RankMe, Garrido et al. 2023), the same for every target")
def rankme() -> DirectedEstimator:
    def quality(xs: list[np.ndarray]) -> np.ndarray:
        return np.tile([effective_rank(x) for x in xs], (len(xs), 1))

    return DirectedEstimator("rankme", quality)


# --------------------------------------------------------------------------- lookup
def _space_info(space: str | Path) -> tuple[list[str], dict[str, int], int]:
    """(all models, map method -> number of models having it, models having features)."""
    space = Path(space)
    if not space.is_file():
        raise OnnxAttrError(f"model space {space} does not exist; create it with `onnxattr add`")
    with read_space(space) as r:
        models = r.names()
        counts: dict[str, int] = {}
        n_feat = 0
        for m in models:
            for meth in r.methods(m):
                counts[meth] = counts.get(meth, 0) + 1
            n_feat += r.has_features(m)
    return models, counts, n_feat


def _ordered(methods: Sequence[str]) -> list[str]:
    return sorted(methods, key=lambda m: (METHOD_ORDER.index(m) if m in METHOD_ORDER else 99, m))


def available_estimators(space: str | Path) -> list[str]:
    """Names of the listed estimators usable on this space (each needs data in at least two
    models), in registry order; the default map estimator appears as one name per method."""
    _, counts, n_feat = _space_info(space)
    methods = _ordered([m for m, c in counts.items() if c >= 2])
    out: list[str] = []
    for reg in ESTIMATORS.values():
        if not reg.listed or (reg.needs_maps and not methods) or (
                reg.needs_features and n_feat < 2):
            continue
        out += methods if reg.name == DEFAULT_MAP_ESTIMATOR else [reg.name]
    return out


def _lookup(base: str, counts: Mapping[str, int] | None) -> tuple[RegisteredEstimator, str | None]:
    """The entry a base name (``NAME[:METHOD]`` or a bare method) refers to, and its method
    (``None`` for feature estimators, or when ``counts`` is not given to pick a default)."""
    head, colon, arg = base.partition(":")
    if head not in ESTIMATORS:
        if counts is not None and (colon or head not in counts):
            raise KeyError(base)
        return ESTIMATORS[DEFAULT_MAP_ESTIMATOR], head  # a bare attribution-method name
    reg = ESTIMATORS[head]
    if not reg.needs_maps:
        if colon:
            raise OnnxAttrError(f"estimator {head!r} reads encoder features and takes no "
                                f"':METHOD'; use {head!r}")
        return reg, None
    if counts is None:
        return reg, arg or None
    if arg:
        if counts.get(arg, 0) < 2:
            raise OnnxAttrError(f"{head.upper()} method {arg!r} has maps in fewer than two "
                                f"models; available: {', '.join(_ordered(counts)) or '(none)'}")
        return reg, arg
    for m in DEFAULT_MAP_METHODS:
        if counts.get(m, 0) >= 2:
            return reg, m
    if counts:
        return reg, _ordered(counts)[0]
    raise OnnxAttrError(f"{head.upper()} needs attribution maps in the space; add models with "
                        "a method")


def describe(name: str) -> EstimatorInfo:
    """Data kind and description of an estimator name as users write it."""
    if name.startswith(COMBINE_PREFIX):
        parts = ", ".join(f"{w:g} x {e}" for e, w in parse_combination(name))
        return EstimatorInfo(name, "maps+features",
                             f"sum of standardised affinities (off-diagonal z-scores): {parts}")
    spec = parse_estimator(name)
    reg, method = _lookup(spec.base, None)
    tail = describe_correction(spec)
    if reg.name != DEFAULT_MAP_ESTIMATOR or method is None:
        extra = "" if spec.comparison.is_reference else f" (maps: {spec.comparison.describe()})"
        return EstimatorInfo(name, reg.kind, reg.description + extra + tail)
    if spec.comparison.is_reference:
        text = f"mean per-image cosine of {method!r} attribution maps (the paper's)"
    else:
        text = f"{method!r} attribution maps: {spec.comparison.describe()}, mean over images"
    return EstimatorInfo(name, "maps", text + tail)


def resolve_terms(space: str | Path, spec: EstimatorSpec, **params: Any
                  ) -> tuple[list[tuple[PairwiseEstimator, float]], str]:
    """The pairwise estimators whose weighted sum is the spec's raw matrix, and its label.
    ``params``: estimator parameters; each estimator takes those it declares."""
    known = estimator_params()
    unknown = sorted(set(params) - set(known))
    if unknown:
        offer = ", ".join(f"{p} ({', '.join(e)})" for p, e in known.items()) or "none"
        raise OnnxAttrError(f"no estimator takes parameter {', '.join(map(repr, unknown))}; "
                            f"parameters: {offer}")
    _, counts, _ = _space_info(space)
    try:
        reg, method = _lookup(spec.base, counts)
    except KeyError:
        raise ESTIMATORS.unknown(spec.base, available_estimators(space)) from None
    mine = {k: v for k, v in params.items() if k in reg.params}
    if reg.needs_maps:
        made = reg.factory(method, spec.comparison, **mine)
    elif not spec.comparison.is_reference:
        raise OnnxAttrError(f"{spec.inner!r}: map options apply to attribution methods, not "
                            f"to {reg.name}; only +hub or +cslsK can follow a feature estimator")
    else:
        made = reg.factory(**mine)
    if isinstance(made, Blend):
        return list(made.terms), made.label
    return [(made, 1.0)], made.name


def compute_affinity(space: str | Path, name: str, models: Sequence[str] | None = None, *,
                     use_cache: bool = True, memory_bytes: int = DEFAULT_MEMORY_BYTES,
                     progress: bool = False, **params: Any) -> tuple[LabelledMatrix, dict[str, Any]]:
    """Affinity matrix (higher = more similar) of estimator ``name`` over the space's models.

    ``name`` is a base estimator with map-comparison options and an affinity correction
    (:mod:`onnxattr.analysis.map_compare`: ``grad_input+abs+g16+hub``), or ``combine:EST=W,...``.
    ``params`` are estimator parameters (``lam`` for depara, ``svcca_keep``, ...; each estimator
    takes those it declares). Returns the matrix (``.excluded`` lists models lacking the
    estimator's data) and stats about how many pairs were computed versus taken from the cache.
    """
    kw = dict(use_cache=use_cache, memory_bytes=memory_bytes, progress=progress, **params)
    if name.startswith(COMBINE_PREFIX):
        parts = parse_combination(name)
        mats, computed = [], 0
        for part, _ in parts:
            m, st = compute_affinity(space, part, models, **kw)
            mats.append(m)
            computed += st["computed_pairs"]
        return combine_matrices(mats, [w for _, w in parts]), {"computed_pairs": computed,
                                                               "cached_models": 0}
    spec = parse_estimator(name)
    if (reg := ESTIMATORS.get(spec.base.split(":")[0], None)) is not None and reg.needs_features:
        from ..features import warn_suspect_features

        warn_suspect_features(space, models)
    if reg is not None and reg.directed and spec.correction:
        raise OnnxAttrError(f"{name!r}: +hub and +cslsK assume a symmetric similarity and "
                            f"{reg.name!r} is directed; use {spec.inner!r} (or combine it)")
    mat, stats = _raw_affinity(space, spec, models, **kw)
    if spec.correction:
        label = mat.estimator + spec.name[len(spec.inner):]
        mat = LabelledMatrix(mat.names, correct(spec, mat.values), "affinity", label, mat.excluded)
    return mat, stats


def common_models(space: str | Path, terms: Sequence[tuple[PairwiseEstimator, float]]) -> list[str]:
    """Models having the data of every term."""
    with read_space(space) as r:
        have = [set(est.models_with_data(r)) for est, _ in terms]
    return sorted(set.intersection(*have))


def _raw_affinity(space: str | Path, spec: EstimatorSpec, models: Sequence[str] | None, *,
                  use_cache: bool, memory_bytes: int, progress: bool,
                  **params: Any) -> tuple[LabelledMatrix, dict[str, Any]]:
    """The spec's matrix before its affinity correction (what the engine caches)."""
    all_models, _, _ = _space_info(space)
    terms, label = resolve_terms(space, spec, **params)
    if len(terms) > 1 and models is None:
        models = common_models(space, terms)
    total, stats = None, {"computed_pairs": 0, "cached_models": len(all_models)}
    for est, w in terms:
        if isinstance(est, DirectedEstimator):
            mat, st = directed_matrix(space, est, models)
        else:
            mat, st = pairwise_matrix(space, est, models, use_cache=use_cache,
                                      memory_bytes=memory_bytes, progress=progress)
        total = mat.values * w if total is None else total + w * mat.values
        stats["computed_pairs"] += st["computed_pairs"]
        stats["cached_models"] = min(stats["cached_models"], st["cached_models"])
    excluded = [m for m in all_models if m not in mat.names]
    return LabelledMatrix(mat.names, total, "affinity", label, excluded), stats


# --------------------------------------------------------------------------- combination
COMBINE_PREFIX = "combine:"


def parse_combination(name: str) -> list[tuple[str, float]]:
    """``combine:EST=W,EST=W,...`` -> [(estimator name, weight)]; weights need not sum to 1."""
    body = name[len(COMBINE_PREFIX):]
    out = []
    for item in body.split(","):
        est, sep, w = item.strip().rpartition("=")
        try:
            weight = float(w)
        except ValueError:
            weight = math.nan
        if not sep or not est or not math.isfinite(weight):
            raise OnnxAttrError(f"bad combination {name!r}; write combine:EST=WEIGHT,EST=WEIGHT "
                                "(e.g. combine:grad_input+abs+g16=0.5,cka=0.5)")
        out.append((est, weight))
    if len(out) < 1 or all(w == 0 for _, w in out):
        raise OnnxAttrError(f"combination {name!r} has no non-zero weight")
    return out


def standardise(values: np.ndarray) -> np.ndarray:
    """Affinities in units of their spread: (A - mean) / std over the off-diagonal entries, so
    estimators on different scales (cosines near 0.01, CKA near 0.8) add up meaningfully."""
    a = np.asarray(values, dtype=np.float64)
    off = a[~np.eye(len(a), dtype=bool)]
    off = off[np.isfinite(off)]
    sd = off.std() if off.size else 0.0
    return (a - (off.mean() if off.size else 0.0)) / (sd if sd > 0 else 1.0)


def combine_matrices(mats: Sequence[LabelledMatrix], weights: Sequence[float]) -> LabelledMatrix:
    """Weighted sum of standardised affinities over the models all matrices share."""
    names = [n for n in mats[0].names if all(n in m.names for m in mats[1:])]
    if len(names) < 2:
        raise OnnxAttrError("the combined estimators share fewer than two models")
    total = np.zeros((len(names), len(names)))
    for m, w in zip(mats, weights, strict=True):
        idx = [m.index(n) for n in names]
        total += w * standardise(m.affinity().values[np.ix_(idx, idx)])
    label = COMBINE_PREFIX + ",".join(f"{m.estimator}={w:g}" for m, w in zip(mats, weights,
                                                                             strict=True))
    excluded = sorted({n for m in mats for n in [*m.names, *m.excluded]} - set(names))
    return LabelledMatrix(names, total, "affinity", label, excluded)
