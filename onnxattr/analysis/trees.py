"""Agglomerative similarity trees of models (scipy) and their Newick text.

Default = the original implementation (zju-vipa/TransferbilityFromAttributionMaps,
tools/plot_dendrogram.m): MATLAB ``linkage(affinity)``, i.e. *single* linkage on Euclidean
distances between the rows of the affinity matrix (each model described by its affinities to all
models), with optimal leaf ordering (``optimalleaforder``). ``on="matrix"`` instead clusters the
dissimilarity max(A) - A directly (symmetrised).
"""

from __future__ import annotations

import numpy as np
from scipy.cluster import hierarchy
from scipy.spatial.distance import pdist, squareform

from ..errors import OnnxAttrError
from .distances import LabelledMatrix

LINKAGES = ("single", "complete", "average", "weighted", "centroid", "median", "ward")
DEFAULT_LINKAGE = "single"
EUCLIDEAN_ONLY = ("centroid", "median", "ward")


def linkage(matrix: LabelledMatrix, method: str = DEFAULT_LINKAGE, on: str = "rows") -> np.ndarray:
    """scipy linkage matrix Z for the models of ``matrix`` (any kind; uses its affinity form)."""
    check_linkage(method, on)
    if len(matrix.names) < 2:
        raise OnnxAttrError("a tree needs at least two models")
    aff = matrix.affinity().values
    if not np.all(np.isfinite(aff)):
        raise OnnxAttrError("the affinity matrix has missing or infinite values; recompute it")
    if on == "rows":
        return hierarchy.linkage(pdist(aff), method=method, optimal_ordering=True)
    if on == "matrix":
        sym = (aff + aff.T) / 2
        d = sym.max() - sym
        np.fill_diagonal(d, 0.0)
    return hierarchy.linkage(squareform(d, checks=False), method=method, optimal_ordering=True)


def check_linkage(method: str, on: str = "rows") -> None:
    """Refuse a linkage/tree-input choice before any matrix is computed."""
    if method not in LINKAGES:
        raise OnnxAttrError(f"unknown linkage {method!r}; use one of {', '.join(LINKAGES)}")
    if on not in ("rows", "matrix"):
        raise OnnxAttrError(f"unknown tree input {on!r}; use rows or matrix")
    if on == "matrix" and method in EUCLIDEAN_ONLY:
        raise OnnxAttrError(f"linkage {method!r} needs Euclidean rows; use `on=rows`")


def leaf_order(z: np.ndarray) -> list[int]:
    return hierarchy.leaves_list(z).tolist()


def _quote(name: str) -> str:
    if any(c in name for c in " ():;,[]'"):
        return "'" + name.replace("'", "''") + "'"
    return name


def to_newick(z: np.ndarray, names: list[str]) -> str:
    """Newick text with branch lengths = difference of merge heights."""
    root = hierarchy.to_tree(z)

    def walk(node: hierarchy.ClusterNode, parent_h: float) -> str:
        length = f":{parent_h - node.dist:.6g}"
        if node.is_leaf():
            return _quote(names[node.id]) + length
        return f"({walk(node.left, node.dist)},{walk(node.right, node.dist)}){length}"

    return f"({walk(root.left, root.dist)},{walk(root.right, root.dist)});"
