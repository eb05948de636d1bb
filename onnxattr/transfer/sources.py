"""Source encoders as the space stores them, run batched on onnxruntime.

A source is rebuilt from its record in the space: the ONNX file at ``onnx_path`` (its sha256 must
still be ``onnx_sha256``), truncated at ``encoder_tensor``, fixed up as at `add` time, fed through
its recorded preprocessing. Nothing is converted to torch: measured transfer needs only forwards.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ..encoder import make_preprocessing
from ..errors import OnnxAttrError
from ..onnxgraph import graph as onnx_graph
from ..onnxgraph.fixups import SINGLE_IMAGE, fix_up
from ..preprocess import Preprocessing
from ..space import ModelSpace


@dataclass
class EncoderRunner:
    """A truncated, fixed-up encoder on onnxruntime with its preprocessing."""

    name: str
    model: onnx.ModelProto
    pre: Preprocessing
    single_image: bool = False

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        node: str | None,
        preprocessing: Preprocessing | dict[str, Any] | None = None,
    ) -> EncoderRunner:
        full = onnx_graph.load(path)
        tensor = onnx_graph.resolve_encoder(full, node)
        return cls._build(Path(path).stem, onnx_graph.truncate(full, tensor), preprocessing)

    @classmethod
    def _build(
        cls,
        name: str,
        encoder: onnx.ModelProto,
        preprocessing: Preprocessing | dict[str, Any] | None,
    ) -> EncoderRunner:
        shape = onnx_graph.static_shape(onnx_graph.graph_input(encoder))
        pre = make_preprocessing(shape, preprocessing)
        fixed, notes = fix_up(encoder, list(pre.input_shape(1)))
        return cls(name, fixed, pre, any(f.code == SINGLE_IMAGE for f in notes))

    def run(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Encoder outputs for (N, S, S, 3) uint8 images; 4-D outputs as (N, C, H, W)."""
        import onnxruntime as ort

        from ..onnxgraph.convert import quiet_session_options

        try:
            sess = ort.InferenceSession(
                self.model.SerializeToString(),
                quiet_session_options(),
                providers=["CPUExecutionProvider"],
            )
        except Exception as exc:
            raise OnnxAttrError(
                f"onnxruntime cannot run the encoder of {self.name!r}: "
                f"{' '.join(str(exc).split())[:300]}"
            ) from None
        inp = sess.get_inputs()[0].name
        bs = 1 if self.single_image else batch_size
        outs = []
        for k in range(0, len(images), bs):
            x = self.pre.apply(images[k : k + bs]).numpy()
            outs.append(sess.run(None, {inp: x})[0])
        out = np.concatenate(outs).astype(np.float32)
        if out.ndim == 4 and channels_last(out.shape, self.pre):
            out = out.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(out)


def channels_last(shape: tuple[int, ...], pre: Preprocessing) -> bool:
    """Whether a 4-D encoder output is (N, H, W, C): the two spatial dims are the equal pair for a
    square input (tf2onnx may move an NHWC model's inner tensors to NCHW); else the input layout."""
    _, a, b, c = shape
    if pre.input_size[0] == pre.input_size[1]:
        if a == b != c:
            return True
        if b == c != a:
            return False
    return pre.layout == "nhwc"


@dataclass
class SpaceSource:
    """One model of the space, checked and ready to run."""

    name: str
    uid: str
    onnx_path: Path
    runner: EncoderRunner


def load_sources(space: str | Path, names: list[str] | None = None) -> list[SpaceSource]:
    """Every (or the named) source of the space, each checked before any is run: its ONNX file is
    where the space says and has the recorded sha256."""
    sp = ModelSpace(space)
    records = {r.name: r for r in sp.models()}
    if not records:
        raise OnnxAttrError(f"{space} holds no models; add sources first with `onnxattr add`")
    if names:
        unknown = [n for n in names if n not in records]
        if unknown:
            raise OnnxAttrError(f"no model {unknown[0]!r} in {space}; models: {', '.join(records)}")
    out = []
    for name in names or list(records):
        attrs = records[name].attrs
        path = resolve_onnx_path(str(attrs.get("onnx_path", "")), Path(space))
        if path is None:
            raise OnnxAttrError(
                f"source {name!r}: its ONNX file {attrs.get('onnx_path')!r} is missing (moved or "
                f"deleted since `add`); put it back or re-add the model with `onnxattr add --overwrite`"
            )
        full = onnx_graph.load(path)
        sha = onnx_graph.sha256(full)
        if sha != attrs.get("onnx_sha256"):
            raise OnnxAttrError(
                f"source {name!r}: {path} has changed since it was added (sha256 {sha[:12]}… ≠ "
                f"recorded {str(attrs.get('onnx_sha256'))[:12]}…); its maps describe another "
                "model: re-add it with `onnxattr add --overwrite`"
            )
        pre = (
            json.loads(attrs["preprocessing"])
            if isinstance(attrs.get("preprocessing"), str)
            else attrs.get("preprocessing")
        )
        encoder = onnx_graph.truncate(full, str(attrs["encoder_tensor"]))
        runner = EncoderRunner._build(name, encoder, Preprocessing.from_dict(pre))
        out.append(SpaceSource(name, str(attrs["uid"]), path, runner))
    return out


def resolve_onnx_path(recorded: str, space: Path) -> Path | None:
    """The recorded path as given (absolute, or relative to the working directory), else relative
    to the space file's folder (a space moved together with its models)."""
    if not recorded:
        return None
    p = Path(recorded)
    for cand in (p, space.parent / p):
        if cand.is_file():
            return cand
    return None
