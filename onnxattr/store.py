"""`add`'s store part: one computed model into the space, the one way every path commits one.

`pipeline.add_model` (one model) and `cluster.add_many` (a manifest, on Ray or one after another)
both commit through `store_model` (or, for a model a Ray worker staged as a segment itself,
`commit_staged`): all or nothing, and when the space cannot take the model now
(busy past the lock timeout, read-only, a failing disk) its computed maps are kept in a pending
file beside the space, which the same work picks up again (`store_pending`) without recomputing.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import OnnxAttrError, OnnxAttrWarning
from .onnxgraph.fixups import Fix
from .preprocess import Preprocessing
from .probe import ProbeSet, build_probe, embedded_mismatch
from .segments import discard
from .space import MapStorage, ModelSpace, StagedModel


@dataclass
class AddResult:
    """What `add` did: shown to the user and stored with the model."""

    name: str
    encoder_tensor: str
    verify_rel_err: float
    fixups: list[Fix]
    seconds: float
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class ComputedModel:
    """One model's encoded maps, features and metadata, ready for `ModelSpace.add_encoded`."""

    maps: dict[str, tuple[np.ndarray, np.ndarray | None]]
    features: np.ndarray
    attrs: dict[str, Any]
    result: AddResult
    sketches: dict[str, np.ndarray] = field(default_factory=dict)  # analysis.sketch, per method


def work_key(model_path: Path, *inputs: Any) -> str:
    """What the maps depend on (the model file's bytes, every option, the probe digest): maps
    kept by a failed write are reused only for the same work."""
    h = hashlib.sha256()
    with model_path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    spec = [h.hexdigest(), *(i.to_dict() if isinstance(i, Preprocessing) else i for i in inputs)]
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=repr).encode()).hexdigest()


def store_model(space: ModelSpace, name: str, computed: ComputedModel, *, key: str,
                probe: ProbeSet | None, overwrite: bool, storage: MapStorage) -> None:
    """Write the model (and the probe set of a new space); when the space cannot take it now
    (busy past the lock timeout, read-only, a failing disk), keep the computed maps beside it so
    that rerunning the same command stores them without recomputing."""
    try:
        if probe is not None:
            space.write_probe(probe)
        space.add_encoded(name, computed.maps, computed.features, computed.attrs,
                          overwrite=overwrite, storage=storage, sketches=computed.sketches)
    except (OnnxAttrError, OSError) as exc:
        kept = space.keep_pending(name, key, computed.maps, computed.features, computed.attrs,
                                  computed.sketches)
        if kept is None:
            raise
        raise OnnxAttrError(f"{exc} — the computed maps are kept in {kept}: rerun the same "
                            "command to store them without recomputing") from None
    space.drop_pending(name)


def commit_staged(space: ModelSpace, staged: StagedModel, *, key: str, overwrite: bool) -> None:
    """Link a model a worker staged (its segment written beside the space); when the space
    cannot take it now, keep its maps as a pending file, as :func:`store_model` does."""
    try:
        space.commit_model(staged, overwrite=overwrite, keep_on_failure=True)
    except (OnnxAttrError, OSError) as exc:
        try:
            encoded, features, attrs, sketches = space.read_staged(staged)
            kept = space.keep_pending(staged.name, key, encoded, features, attrs, sketches)
        except (OnnxAttrError, OSError):
            kept = None
        finally:
            discard([staged.segment])
        if kept is None:
            raise
        raise OnnxAttrError(f"{exc} — the computed maps are kept in {kept}: rerun the same "
                            "command to store them without recomputing") from None
    space.drop_pending(staged.name)


def store_pending(space: ModelSpace, name: str, key: str, *, overwrite: bool, storage: MapStorage,
                  say: Callable[[str], None]) -> AddResult | None:
    """Store the maps an earlier run of the same work (`key`) computed but could not store;
    None when there are none."""
    kept = space.take_pending(name, key) if key else None
    if kept is None:
        return None
    encoded, features, attrs, sketches = kept
    say(f"storing the maps an earlier add computed but could not store "
        f"({space.pending_path(name)}); nothing is recomputed")
    probe, had_probe = (None, True) if space.has_probe() else load_or_build_probe(space, say)
    result = AddResult(name, attrs["encoder_tensor"], float(attrs["verify_rel_err"]),
                       [Fix(**f) for f in attrs["fixups"]], 0.0, dict(attrs["methods"]))
    store_model(space, name, ComputedModel(encoded, features, attrs, result, sketches), key=key,
                probe=None if had_probe else probe, overwrite=overwrite, storage=storage)
    return result


def check_map_size(space: ModelSpace, map_size: int | None) -> int | None:
    """The map size to use: the one asked for, which must match the space's, else the space's."""
    if map_size is not None and map_size < 1:
        raise OnnxAttrError("`map_size` must be at least 1 pixel")
    stored = space.map_size()
    if map_size is not None and stored is not None and map_size != stored:
        raise OnnxAttrError(
            f"{space.path} stores maps of {stored}x{stored}; maps of another size do not "
            f"compare: pass `map_size={stored}` or use a new `space`"
        )
    return map_size or stored


def load_or_build_probe(space: ModelSpace, say: Callable[[str], None]) -> tuple[ProbeSet, bool]:
    """The space's probe set, or the embedded default for an empty space (written with the
    first model); the flag says whether the space had one."""
    if space.has_probe():
        probe = space.read_probe()
        if note := embedded_mismatch(probe):
            warnings.warn(note, OnnxAttrWarning, stacklevel=2)
        return probe, True
    if space.path.exists() and space.models():
        raise OnnxAttrError(f"{space.path} holds models but no probe set (damaged or edited); "
                            f"`onnxattr check {space.path}`")
    say("no probe set in the space: building the embedded default")
    return build_probe(None, size=224, seed=0), False
