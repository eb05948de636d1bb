"""One place that turns a `--device` string into a torch device, or a one-line error.

Every command that accepts `--device` (add, demo, taskonomy, ...) calls `resolve_device` before it
does any work, so a wrong name or a missing accelerator fails at once, not once per model later.
"""

from __future__ import annotations

import torch

from .errors import OnnxAttrError

_KINDS = ("cpu", "cuda", "mps")


def resolve_device(name: str | torch.device | None = "cpu") -> torch.device:
    """`cpu`, `cuda`, `cuda:N` or `mps` as a torch.device that exists on this machine.

    `cuda` without an index means the current CUDA device. Raises OnnxAttrError (one line, with
    what to do) for an unknown name, an index out of range, or an accelerator torch cannot see.
    """
    if isinstance(name, torch.device):
        name = str(name)
    text = (name or "cpu").strip().lower()
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in _KINDS:
        raise OnnxAttrError(f"unknown device {name!r}; use cpu, cuda, cuda:N or mps")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise OnnxAttrError(
                f"`device={name}` was asked for, but torch sees no CUDA device "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}); "
                "use `device=cpu`"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise OnnxAttrError(
                f"`device={name}`: torch sees {count} CUDA device(s) (cuda:0..cuda:{count - 1})"
            )
    if device.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise OnnxAttrError(
            f"`device={name}` was asked for, but torch sees no MPS device; use `device=cpu`"
        )
    return device
