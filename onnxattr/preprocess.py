"""Preprocessing T_i of one model (probe uint8 RGB -> model input) and its inverse for maps.

x = (pixel · scale − mean) / std per channel, after resizing the probe image to the model's input
size and converting its colour order. T_i⁻¹ sums a map's channels (so gray-input and colour-input
models compare, as the original implementation does) and resizes it back to probe resolution.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .errors import OnnxAttrError

PRESETS: dict[str, dict[str, Any]] = {
    "imagenet": {"scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    "caffe": {"color": "bgr", "scale": 1.0, "mean": [103.939, 116.779, 123.68], "std": [1.0, 1.0, 1.0]},
    "minus1to1": {"scale": 1 / 127.5, "mean": [1.0], "std": [1.0]},
    "unit": {"scale": 1 / 255, "mean": [0.0], "std": [1.0]},
    "raw255": {"scale": 1.0, "mean": [0.0], "std": [1.0]},
}


@dataclass(frozen=True)
class Preprocessing:
    """How a model expects its input; recorded with the model's maps."""

    input_size: tuple[int, int] = (224, 224)
    layout: str = "nchw"
    color: str = "rgb"
    scale: float = 1 / 255
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    preset: str | None = field(default=None)

    def __post_init__(self) -> None:
        if self.layout not in ("nchw", "nhwc"):
            raise OnnxAttrError(f"layout must be nchw or nhwc, not {self.layout!r}")
        if self.color not in ("rgb", "bgr", "gray"):
            raise OnnxAttrError(f"color must be rgb, bgr or gray, not {self.color!r}")
        h, w = self.input_size
        if h <= 0 or w <= 0:
            raise OnnxAttrError(f"input size must be positive, not {h}x{w}")
        for name in ("mean", "std"):
            v = getattr(self, name)
            if len(v) not in (1, self.channels):
                raise OnnxAttrError(
                    f"--{name} has {len(v)} values; give 1 or {self.channels} (one per channel)"
                )
        if any(s == 0 for s in self.std):
            raise OnnxAttrError("`std` must not contain 0")

    @property
    def channels(self) -> int:
        return 1 if self.color == "gray" else 3

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> Preprocessing:
        if name not in PRESETS:
            raise OnnxAttrError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}")
        values = {**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}}
        return cls.from_dict({**values, "preset": name})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        unknown = set(d) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise OnnxAttrError(f"unknown preprocessing keys: {', '.join(sorted(unknown))}")
        d = dict(d)
        for key in ("input_size", "mean", "std"):
            if key in d:
                d[key] = tuple(int(v) if key == "input_size" else float(v) for v in d[key])
        if "scale" in d:
            d["scale"] = float(d["scale"])
        return cls(**d)

    @classmethod
    def load(cls, path: str | Path) -> Preprocessing:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise OnnxAttrError(f"cannot read preprocessing file {path}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One line, e.g. `224x224 nchw rgb, x = (pixel * 1/255 - (0.485, 0.456, 0.406)) /
        (0.229, 0.224, 0.225) (preset imagenet)`: what `add` prints and `list` can show."""
        inv = 1 / self.scale
        nice = inv > 1 and abs(inv - round(inv, 3)) < 1e-6 * inv
        scale = f"1/{round(inv, 3):g}" if nice else f"{self.scale:g}"
        h, w = self.input_size
        return (f"{h}x{w} {self.layout} {self.color}, x = (pixel * {scale} - {_vec(self.mean)}) / "
                f"{_vec(self.std)}" + (f" (preset {self.preset})" if self.preset else ""))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def input_shape(self, batch: int = 1) -> tuple[int, ...]:
        h, w = self.input_size
        c = self.channels
        return (batch, c, h, w) if self.layout == "nchw" else (batch, h, w, c)

    def apply(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """T_i: (B, S, S, 3) uint8 RGB probe images -> the model's float32 input tensor."""
        x = torch.as_tensor(np.asarray(images)).permute(0, 3, 1, 2).float()
        if tuple(x.shape[-2:]) != tuple(self.input_size):
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False,
                              antialias=True).clamp(0, 255)
        if self.color == "bgr":
            x = x.flip(1)
        elif self.color == "gray":  # ITU-R BT.601 luma, as PIL's convert("L")
            x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        x = (x * self.scale - mean) / std
        return x.permute(0, 2, 3, 1).contiguous() if self.layout == "nhwc" else x.contiguous()

    def constant_input(self, pixel: float) -> torch.Tensor:
        """T_i of an image of value `pixel` (0-255) in every channel of every pixel, shaped to
        broadcast against the model's input ((1, C, 1, 1), or (1, 1, 1, C) for NHWC): colour
        order, luma and resizing leave a uniform gray image as it is, so only the scaling acts."""
        mean = torch.tensor(self.mean, dtype=torch.float32)
        std = torch.tensor(self.std, dtype=torch.float32)
        x = (torch.full((self.channels,), float(pixel)) * self.scale - mean) / std
        return x.view(1, 1, 1, -1) if self.layout == "nhwc" else x.view(1, -1, 1, 1)

    def invert_map(self, attribution: torch.Tensor, probe_size: int) -> torch.Tensor:
        """T_i⁻¹ for a map: (B, *input) -> (B, S, S), channels summed, resized to probe resolution."""
        a = attribution.permute(0, 3, 1, 2) if self.layout == "nhwc" else attribution
        a = a.sum(1, keepdim=True)
        if tuple(a.shape[-2:]) != (probe_size, probe_size):
            a = F.interpolate(a, size=(probe_size, probe_size), mode="bilinear", align_corners=False,
                              antialias=True)
        return a[:, 0]


def _vec(v: tuple[float, ...]) -> str:
    return f"{v[0]:g}" if len(v) == 1 else "(" + ", ".join(f"{x:g}" for x in v) + ")"
