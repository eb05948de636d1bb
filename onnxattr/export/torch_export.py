"""Export a torch module to ONNX with a stable tensor name for the encoder output, and check it
against the module in onnxruntime (the zoo's torch recipes, the benchmark's task networks)."""

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
    output_names: list[str],
    encoder_at: nn.Module | None = None,
    encoder_is_input: bool = False,
    input_name: str = "input",
    dynamic_batch: bool = False,
    producer: str = "onnxattr",
    seed: int = 0,
) -> dict[str, Any]:
    """Export `net` (eval mode, opset 17); name the encoder tensor ENCODER_TENSOR.

    The encoder is the output (or, with `encoder_is_input`, the input) of the submodule
    `encoder_at`, captured by a hook; without `encoder_at`, `net`'s forward returns it last,
    after the model's own outputs. It is exported as an extra graph output so that torch gives it
    our name, then removed from the outputs again: the file has the model's own outputs only.
    `dynamic_batch` leaves the batch dimension symbolic. Returns the check record comparing
    onnxruntime with the torch module on a seeded random input.
    """
    net = net.eval()
    wrapped = net if encoder_at is None else _WithEncoder(net, encoder_at, encoder_is_input).eval()
    x = torch.from_numpy(
        np.random.default_rng(seed).standard_normal(input_shape).astype(np.float32)
    )
    names = [*output_names, ENCODER_TENSOR]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        # shapes are fixed at export: python-int shape arithmetic (SAME padding) is intended
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            wrapped,
            (x,),
            str(out_path),
            input_names=[input_name],
            output_names=names,
            opset_version=17,
            dynamic_axes={n: {0: "batch"} for n in (input_name, *names)} if dynamic_batch else None,
            dynamo=False,
            do_constant_folding=True,
        )
    model = onnx.load(str(out_path))
    keep = [o for o in model.graph.output if o.name != ENCODER_TENSOR]
    del model.graph.output[:]
    model.graph.output.extend(keep)
    model.producer_name = producer
    onnx.save(model, str(out_path))
    reference = torch_outputs(net, x)
    if encoder_at is None:
        reference = reference[:-1]
    return compare_onnx(out_path, {input_name: x.numpy()}, reference, "torch")


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
