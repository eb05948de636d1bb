"""Stored encoder features: pooled by the encoder tensor's own layout, checked, recomputed.

Each model's ``/models/<name>/features`` (Np, D) feeds the representation baselines (svcca, cka,
rsa, relation, depara). A 4-D encoder output is pooled over its *spatial* axes, so which axis holds
the channels matters. It is decided from the graph (`graph.channel_axis`), not from the input
layout: a TFLite/Keras model converted by tf2onnx takes NHWC input but runs channel-first inside.
Spaces written before the decision was recorded (no ``features_pooling`` attribute) pooled by the
input layout; `check_features` tells which of their models are affected and `recompute_features`
rewrites those features from the ONNX file (one forward pass over the probe, no attribution).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .encoder import load_encoder
from .errors import OnnxAttrError
from .onnxgraph import graph as onnx_graph

MAX_FEATURES = 8192
#: Version of the pooling rule, stored with each model's features.
FEATURE_POOLING_VERSION = 2


def pool_features(
    out: torch.Tensor, channel_axis: int = 1, max_dim: int = MAX_FEATURES
) -> torch.Tensor:
    """The encoder output per image, average-pooled spatially (then over channel groups) to <= max_dim.

    A 4-D output is first put channel-first (its channels at `channel_axis`), so pooling averages
    over the spatial axes and keeps the channels.
    """
    out = out.float()
    if out.dim() == 4:
        if channel_axis != 1:
            out = out.movedim(channel_axis, 1)
        c, h, w = out.shape[1:]
        g = max((s for s in (8, 4, 2, 1) if c * s * s <= max_dim), default=1)
        if g * g < h * w:
            out = F.adaptive_avg_pool2d(out, min(g, h, w) if h == w else (min(g, h), min(g, w)))
    flat = out.flatten(1)
    if flat.shape[1] > max_dim:
        groups = -(-flat.shape[1] // max_dim)
        pad = groups * max_dim - flat.shape[1]
        flat = F.pad(flat, (0, pad)).view(flat.shape[0], max_dim, groups).mean(2)
    return flat


def feature_pooling_record(
    axis: onnx_graph.ChannelAxis, shape: Sequence[int], dim: int
) -> dict[str, Any]:
    """What is stored with a model's features: how they were pooled."""
    return {
        "version": FEATURE_POOLING_VERSION,
        "channel_axis": axis.axis,
        "reason": axis.reason,
        "encoder_shape": [int(d) for d in shape],
        "dim": int(dim),
    }


@dataclass
class FeatureCheck:
    """One model's features: `status` is ok, wrong or unknown, `detail` says why."""

    name: str
    status: str
    detail: str
    dim: int


def _pooling(attrs: dict[str, Any]) -> dict[str, Any] | None:
    rec = attrs.get("features_pooling")
    return json.loads(rec) if isinstance(rec, str) and rec else None


def legacy_suspect(attrs: dict[str, Any]) -> bool:
    """Features written before pooling was recorded, from an NHWC input: maybe pooled wrongly."""
    if _pooling(attrs) is not None:
        return False
    pre = json.loads(attrs.get("preprocessing") or "{}")
    return pre.get("layout") == "nhwc"


def check_features(space: str | Path, names: Sequence[str] | None = None) -> list[FeatureCheck]:
    """For each model, whether its stored features were pooled along the encoder's channel axis.

    Models with a pooling record are ok. Older ones are checked against the graph of their ONNX
    file (when it is still there and unchanged): the old rule put the channels at axis 3 for an
    NHWC input and at axis 1 otherwise.
    """
    from .space import ModelSpace

    records = {r.name: r for r in ModelSpace(space).models()}
    _check_known(records, names)
    out = []
    for name in names or sorted(records):
        attrs = records[name].attrs
        dim = _feature_dim(space, name)
        rec = _pooling(attrs)
        if rec is not None:
            shape = "×".join(str(d) for d in rec["encoder_shape"])
            out.append(FeatureCheck(name, "ok", f"encoder {shape}, {rec['reason']}", dim))
            continue
        pre = json.loads(attrs.get("preprocessing") or "{}")
        old_axis = 3 if pre.get("layout") == "nhwc" else 1
        try:
            enc = _encoder_of(attrs)
        except OnnxAttrError as exc:
            out.append(
                FeatureCheck(name, "unknown", f"written before pooling was recorded; {exc}", dim)
            )
            continue
        rank = _output_rank(enc.model, enc.tensor)
        if rank != 4 or enc.channel_axis.axis == old_axis:
            out.append(
                FeatureCheck(
                    name,
                    "ok",
                    "written before pooling was recorded; the old "
                    "rule gives the same features for this graph",
                    dim,
                )
            )
        else:
            out.append(
                FeatureCheck(
                    name,
                    "wrong",
                    f"pooled with channels at axis {old_axis} (input layout), but "
                    f"the encoder's channels are at axis {enc.channel_axis.axis} "
                    f"({enc.channel_axis.reason})",
                    dim,
                )
            )
    return out


def recompute_features(
    space: str | Path,
    names: Sequence[str],
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Recompute the named models' features from their ONNX files; returns name -> new dim.

    One forward pass of the encoder over the space's probe set, pooled by the graph's channel
    axis; the maps are left alone. Cached feature-based affinities are dropped.
    """
    from .device import resolve_device
    from .onnxgraph.convert import to_torch
    from .onnxgraph.fixups import SINGLE_IMAGE
    from .space import ModelSpace

    say = log or (lambda *_: None)
    device = resolve_device(device)
    space_obj = ModelSpace(space)
    records = {r.name: r for r in space_obj.models()}
    _check_known(records, names)
    probe = space_obj.read_probe()
    dims = {}
    for name in names:
        enc = _encoder_of(records[name].attrs)
        net = to_torch(enc.model)
        net.module.to(device)
        step = 1 if any(f.code == SINGLE_IMAGE for f in enc.fixups) else batch_size
        feats, shape = [], []
        with torch.no_grad():
            for start in range(0, len(probe), step):
                x = enc.preprocessing.apply(probe.images[start : start + step]).to(device)
                o = net(x)
                shape = list(o.shape[1:])
                feats.append(pool_features(o, enc.channel_axis.axis).cpu())
        values = torch.cat(feats).numpy()
        space_obj.replace_features(
            name, values, feature_pooling_record(enc.channel_axis, shape, values.shape[1])
        )
        dims[name] = values.shape[1]
        say(f"{name}: features recomputed, {values.shape[1]} dims ({enc.channel_axis.reason})")
    return dims


def _check_known(records: dict, names: Sequence[str] | None) -> None:
    unknown = [n for n in names or () if n not in records]
    if unknown:
        raise OnnxAttrError(
            f"no model {', '.join(map(repr, unknown))} in the space; models: {', '.join(records) or 'none'}"
        )


def _feature_dim(space: str | Path, name: str) -> int:
    from .space_reader import read_space

    with read_space(space) as r:
        shape = r.feature_shape(name)
        return int(shape[1]) if len(shape) == 2 else 0


def _encoder_of(attrs: dict[str, Any]):
    """The stored model's encoder, rebuilt from its ONNX file (which must be unchanged)."""
    path = Path(str(attrs.get("onnx_path", "")))
    if not path.is_file():
        raise OnnxAttrError(f"its ONNX file {str(path)!r} is not there to recompute from")
    enc = load_encoder(path, str(attrs["encoder_tensor"]), json.loads(attrs["preprocessing"]))
    if attrs.get("onnx_sha256") and enc.onnx_sha256 != attrs["onnx_sha256"]:
        raise OnnxAttrError(f"{path} changed since the model was added (sha256 differs)")
    return enc


def _output_rank(model, tensor: str) -> int | None:
    shape = onnx_graph.infer_shapes(model).get(tensor)
    return None if shape is None else len(shape)


def warn_suspect_features(space: str | Path, names: Sequence[str] | None = None) -> list[str]:
    """Warn (once per call) about models whose features may have been pooled along the wrong axes."""
    import warnings

    from .errors import OnnxAttrWarning
    from .space import ModelSpace

    suspects = [
        r.name
        for r in ModelSpace(space).models()
        if (names is None or r.name in names) and legacy_suspect(r.attrs)
    ]
    if suspects:
        warnings.warn(
            f"features of {', '.join(suspects)} were stored by an older onnxattr that pooled them "
            "by the input layout (NHWC) and may be wrong; `onnxattr features -s "
            f"{space}` checks them, with --recompute it fixes them (in Python: "
            "`onnxattr.features.check_features`, `recompute_features`)",
            OnnxAttrWarning,
            stacklevel=2,
        )
    return suspects
