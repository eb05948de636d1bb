"""Source encoders as the space stores them, run batched on onnxruntime.

A source is rebuilt from its record in the space: the ONNX file at ``onnx_path`` (its sha256 must
still be ``onnx_sha256``) through `encoder.load_encoder` with its recorded encoder tensor and
preprocessing, exactly as `add` built it (truncation, layout, fix-ups). Nothing is converted to
torch: measured transfer needs only forwards.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ..encoder import Encoder, load_encoder
from ..errors import OnnxAttrError
from ..onnxgraph import graph as onnx_graph
from ..onnxgraph.fixups import SINGLE_IMAGE
from ..preprocess import Preprocessing
from ..space import ModelSpace


def check_batch_size(batch_size: int) -> int:
    """Images per encoder pass: at least 1. The one rule of measure_transfer, estimate_transfer
    and the CLI, which checks it before any image is read."""
    if not batch_size >= 1:
        raise OnnxAttrError(f"`batch_size={batch_size}` must be at least 1")
    return batch_size


def check_outputs(out: str | Path | None, json_out: str | Path | None, stem: str) -> None:
    """Output files of a transfer run, refused if a folder, before any image is read (the API
    and the CLI check alike)."""
    for path, arg, suffix in ((out, "out", "csv"), (json_out, "json_out", "json")):
        if path is not None and Path(path).is_dir():
            raise OnnxAttrError(f"`{arg}` {path} is a folder; give a file in it, e.g. "
                                f"{Path(path) / f'{stem}.{suffix}'}")


@dataclass
class EncoderRunner:
    """An encoder as `add` builds it (`encoder.load_encoder`), run on onnxruntime."""

    name: str
    encoder: Encoder

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        node: str | None,
        preprocessing: Preprocessing | dict[str, Any] | None = None,
    ) -> EncoderRunner:
        return cls(Path(path).stem, load_encoder(path, node, preprocessing))

    @property
    def model(self) -> onnx.ModelProto:
        return self.encoder.model

    @property
    def pre(self) -> Preprocessing:
        return self.encoder.preprocessing

    def run(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Encoder outputs for (N, S, S, 3) uint8 images; 4-D outputs channel-first (N, C, H, W),
        their channels found where the graph puts them (`encoder.channel_axis`, as features do)."""
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
        single = any(f.code == SINGLE_IMAGE for f in self.encoder.fixups)
        bs = 1 if single else batch_size
        outs = []
        for k in range(0, len(images), bs):
            x = self.pre.apply(images[k : k + bs]).numpy()
            outs.append(sess.run(None, {inp: x})[0])
        out = np.concatenate(outs).astype(np.float32)
        if out.ndim == 4:
            out = np.moveaxis(out, self.encoder.channel_axis.axis, 1)
        return np.ascontiguousarray(out)


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
        encoder = load_encoder(full, str(attrs["encoder_tensor"]), Preprocessing.from_dict(pre))
        runner = EncoderRunner(name, encoder)
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
