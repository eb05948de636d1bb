"""Stage 2b: an ONNX model becomes a differentiable torch net (onnx2torch), checked against onnxruntime.

onnx2torch module names are not reversible, so every module is mapped back to the ONNX node it came from
through the `onnx_mapping` that onnx2torch attaches (its output tensor names).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch
from torch import fx, nn

from ..errors import OnnxAttrError
from .converters import check_convertible  # importing it files the converters with onnx2torch


@dataclass
class TorchNet:
    """A converted encoder: the torch module (an fx.GraphModule; its `.graph` is fx's graph) and,
    per submodule target, the ONNX node it implements. "graph" in onnxattr is always a graph of
    nodes (ONNX's GraphProto, fx's Graph); the converted model is a net."""

    module: fx.GraphModule
    onnx_nodes: dict[str, onnx.NodeProto]

    def op_type(self, target: str) -> str:
        return self.onnx_nodes[target].op_type

    def modules_of_type(self, op_types: set[str] | frozenset[str]) -> Iterator[tuple[str, nn.Module]]:
        """Submodules whose ONNX op type is in `op_types`, in graph order."""
        for target, node in self.onnx_nodes.items():
            if node.op_type in op_types:
                yield target, self.module.get_submodule(target)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.module(x)
        return out[0] if isinstance(out, (tuple, list)) else out


def to_torch(model: onnx.ModelProto) -> TorchNet:
    """Convert a (truncated, fixed-up) ONNX model with one input and one output into a TorchNet."""
    from onnx2torch import convert

    check_convertible(model)
    if len(model.graph.output) != 1:
        raise OnnxAttrError(
            f"the encoder graph has {len(model.graph.output)} outputs; truncate it at one tensor "
            "with `encoder_node`"
        )
    try:
        module = convert(model, attach_onnx_mapping=True)
    except Exception as exc:  # onnx2torch raises bare NotImplementedError/KeyError/ValueError
        raise OnnxAttrError(
            f"onnx2torch could not convert the encoder graph: {type(exc).__name__}: {exc}; "
            "try an earlier `encoder_node` (`onnxattr nodes MODEL` lists them)"
        ) from exc
    by_output = {out: node for node in model.graph.node for out in node.output if out}
    nodes: dict[str, onnx.NodeProto] = {}
    for target, sub in module.named_modules():
        mapping = getattr(sub, "onnx_mapping", None)
        if mapping is not None and mapping.outputs and mapping.outputs[0] in by_output:
            nodes[target] = by_output[mapping.outputs[0]]
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return TorchNet(module=module, onnx_nodes=nodes)


def relative_error(reference: np.ndarray, value: np.ndarray) -> float:
    """max |value - reference| / max |reference|: one figure that is scale-free and catches outliers."""
    scale = float(np.abs(reference).max())
    return float(np.abs(value - reference).max()) / (scale if scale > 0 else 1.0)


def quiet_session_options() -> Any:
    """onnxruntime options that keep its warnings (unused initializers, ...) off the console."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return options


def verify(net: TorchNet, model: onnx.ModelProto, x: np.ndarray, rtol: float,
           names: Sequence[str] | None = None) -> float:
    """Run onnxruntime and the torch net on `x`; return the relative error, raise if above `rtol`
    or if either output is not finite (`names`: the probe images of `x`, for the message)."""
    import onnxruntime as ort

    device = next(iter(net.module.buffers()), torch.empty(0)).device
    try:
        session = ort.InferenceSession(
            model.SerializeToString(), quiet_session_options(), providers=ort_providers(device)
        )
        (reference,) = session.run(None, {session.get_inputs()[0].name: x})
    except Exception as exc:
        raise OnnxAttrError(
            f"onnxruntime cannot run the encoder graph, so the conversion cannot be verified: {exc}"
        ) from exc
    with torch.no_grad(), _exact_matmul():
        value = net(torch.from_numpy(x).to(device)).float().cpu().numpy()
    if reference.shape != value.shape:
        raise OnnxAttrError(
            f"converted encoder output has shape {value.shape}, onnxruntime gives {reference.shape}"
        )
    for who, out in (("onnxruntime", reference), ("the converted encoder", value)):
        if not np.isfinite(out).all():
            bad = np.flatnonzero(~np.isfinite(out.reshape(len(out), -1)).all(axis=1))
            which = ", ".join(names[i] if names else f"#{i}" for i in bad.tolist())
            raise OnnxAttrError(
                f"{who} gives NaN/inf encoder outputs on probe images {which}; no maps were "
                "stored. A tolerance cannot "
                "fix this: check the preprocessing (`preset`, `scale`, `mean`, `std`) or pick "
                "another `encoder_node`"
            )
    err = relative_error(reference.astype(np.float32), value)
    if not err <= rtol:
        raise OnnxAttrError(
            f"the torch conversion differs from onnxruntime by {err:.2e} (relative, max-abs); "
            f"tolerance is {rtol:.0e}. No maps were stored. Check the fix-ups reported above, "
            "or raise `rtol` if the difference is expected"
        )
    return err


def ort_providers(device: torch.device | str) -> list[Any]:
    """onnxruntime providers that check a conversion on ``device``: on CUDA, the CUDA execution
    provider on the same GPU with TF32 off (onnxruntime-gpu, extra ``gpu``), else the CPU one."""
    import onnxruntime as ort

    device = torch.device(device)
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        index = device.index if device.index is not None else torch.cuda.current_device()
        return [("CUDAExecutionProvider", {"device_id": index, "use_tf32": 0}),
                "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class _exact_matmul:
    """Disable TF32 so a GPU conversion is verified at float32 precision."""

    def __enter__(self) -> None:
        self._saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False

    def __exit__(self, *exc: object) -> None:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self._saved
