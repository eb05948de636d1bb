"""Swap submodules of a torch module (a TorchNet's fx.GraphModule) for the duration of a pass:
how per-op backward rules are applied."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from torch import nn


@contextlib.contextmanager
def swapped(root: nn.Module, replacements: Mapping[str, nn.Module]) -> Iterator[None]:
    """Replace `root.<target>` by the given modules; restore the originals on exit, even on error."""
    originals: dict[str, nn.Module] = {}
    try:
        for target, new in replacements.items():
            parent_name, _, attr = target.rpartition(".")
            parent = root.get_submodule(parent_name) if parent_name else root
            originals[target] = getattr(parent, attr)
            setattr(parent, attr, new)
        yield
    finally:
        for target, old in originals.items():
            parent_name, _, attr = target.rpartition(".")
            parent = root.get_submodule(parent_name) if parent_name else root
            setattr(parent, attr, old)
