"""Export a torch module to ONNX with a stable tensor name for the encoder output, and check it."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

#: Name given to the encoder tensor in every graph exported from torch (stable across torch
#: versions, unlike the auto-generated "/features/.../Clip_output_0" names).
ENCODER_TENSOR = "encoder"


class _WithEncoder(nn.Module):
    """Wraps `net` so that forward also returns the encoder tensor captured by a hook.

    `at` is a submodule; with `use_input=True` the encoder is the input of `at` (pre-logits: the
    input of the final classifier layer), else its output.
    """

    def __init__(self, net: nn.Module, at: nn.Module, use_input: bool) -> None:
        super().__init__()
        self.net = net
        self._captured: torch.Tensor | None = None
        if use_input:
            at.register_forward_pre_hook(lambda _m, args: self._capture(args[0]))
        else:
            at.register_forward_hook(lambda _m, _args, out: self._capture(out))

    def _capture(self, t: Any) -> None:
        self._captured = t[0] if isinstance(t, (tuple, list)) else t

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.net(x)
        outs = tuple(out) if isinstance(out, (tuple, list)) else (out,)
        assert self._captured is not None, "encoder hook did not fire"
        return (*outs, self._captured)


def torch_outputs(net: nn.Module, x: torch.Tensor) -> list[np.ndarray]:
    with torch.no_grad():
        out = net(x)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return [o.detach().cpu().numpy() for o in outs]


def export_torch(
    net: nn.Module,
    input_shape: tuple[int, ...],
    out_path: Path,
    *,
    encoder_at: nn.Module,
    encoder_is_input: bool,
    output_names: list[str],
    input_name: str = "input",
    seed: int = 0,
) -> dict[str, Any]:
    """Export `net` (eval mode) at a fixed input shape; name the encoder tensor ENCODER_TENSOR.

    The encoder is exported as an extra graph output so that torch gives it our name, then
    removed from the outputs again: the file has the model's own outputs only. Returns the check
    record comparing onnxruntime with the torch module on a seeded random input.
    """
    net = net.eval()
    wrapped = _WithEncoder(net, encoder_at, encoder_is_input).eval()
    x = torch.from_numpy(
        np.random.default_rng(seed).standard_normal(input_shape).astype(np.float32)
    )
    with torch.no_grad(), warnings.catch_warnings():
        # shapes are fixed at export: python-int shape arithmetic (SAME padding) is intended
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            wrapped,
            (x,),
            str(out_path),
            input_names=[input_name],
            output_names=[*output_names, ENCODER_TENSOR],
            opset_version=17,
            dynamo=False,
            do_constant_folding=True,
        )
    model = onnx.load(str(out_path))
    keep = [o for o in model.graph.output if o.name != ENCODER_TENSOR]
    del model.graph.output[:]
    model.graph.output.extend(keep)
    model.producer_name = "onnxattr.model_zoo"
    onnx.save(model, str(out_path))
    return compare_onnx(out_path, {input_name: x.numpy()}, torch_outputs(net, x), "torch")


def compare_onnx(
    path: Path,
    feeds: dict[str, np.ndarray],
    reference: list[np.ndarray],
    reference_name: str,
    output_names: list[str] | None = None,
) -> dict[str, Any]:
    """Run `path` in onnxruntime; compare its outputs (all, or `output_names`) with `reference`.

    rel_err is max |onnx - reference| / max |reference| over the outputs.
    """
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(output_names, feeds)
    if len(got) != len(reference):
        raise RuntimeError(f"{path.name}: {len(got)} ONNX outputs vs {len(reference)} reference")
    max_abs = 0.0
    rel = 0.0
    for g, r in zip(got, reference):
        r = np.asarray(r, dtype=np.float64).reshape(np.shape(g))
        err = float(np.max(np.abs(np.asarray(g, dtype=np.float64) - r)))
        max_abs = max(max_abs, err)
        rel = max(rel, err / max(float(np.max(np.abs(r))), 1e-12))
    return {"reference": reference_name, "max_abs_err": max_abs, "rel_err": rel}
