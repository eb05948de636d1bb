"""The benchmark's task networks: a tiny ResNet-style encoder (or a plain VGG-style one) and a task
decoder, trained from scratch on the scenes of one task, exported whole to ONNX.

The encoder output (the representation every estimator and the transfer stage look at) is the
graph tensor named ``encoder``: (B, 32, S/8, S/8). The decoder is linear and has the form of the
measured-transfer head (:mod:`onnxattr.transfer.heads`), so an encoder is trained for the readout
the oracle fits: a 3×3 convolution to 4·C values and a pixel shuffle to S/4 (the targets'
resolution). Every network starts from its own initialisation (:func:`init_seed`): no two encoders
share their starting weights.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..export.torch_export import export_torch
from ..preprocess import Preprocessing
from .scenes import DENSE, Scenes, Task

WIDTHS = (16, 24, 32)


def _conv_bn(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)]


class BasicBlock(nn.Module):
    """ResNet basic block: two 3×3 conv-BN, a 1×1 conv-BN shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*_conv_bn(cin, cout, stride), nn.ReLU(), *_conv_bn(cout, cout))
        self.short = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.short(x))


def resnet_encoder(cin: int = 3) -> nn.Module:
    a, b, c = WIDTHS
    return nn.Sequential(*_conv_bn(cin, a, 2), nn.ReLU(), BasicBlock(a, b, 2), BasicBlock(b, c, 2))


def plain_encoder(cin: int = 3) -> nn.Module:
    """VGG-style: five conv-BN-ReLU, no shortcuts (a different architecture, same output shape)."""
    a, b, c = WIDTHS
    layers: list[nn.Module] = []
    for ci, co, s in ((cin, a, 2), (a, a, 1), (a, b, 2), (b, c, 1), (c, c, 2)):
        layers += [*_conv_bn(ci, co, s), nn.ReLU()]
    return nn.Sequential(*layers)


ARCHS = {"resnet": resnet_encoder, "plain": plain_encoder}


class TaskNet(nn.Module):
    """Encoder + task decoder; ``forward`` returns (task output, encoder output)."""

    def __init__(self, task: Task, arch: str = "resnet") -> None:
        super().__init__()
        self.task = task
        self.encoder = ARCHS[arch]()
        # S/8 -> S/4 by a linear sub-pixel convolution
        self.decoder = nn.Sequential(
            nn.Conv2d(WIDTHS[-1], 4 * task.channels, 3, padding=1), nn.PixelShuffle(2)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encoder(x)
        y = self.decoder(z)
        if y.shape[-1] != DENSE:
            y = F.interpolate(y, size=(DENSE, DENSE), mode="bilinear", align_corners=False)
        return y, z


def task_loss(task: Task, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if task.kind == "dense_reg":
        return F.mse_loss(pred, target)
    return F.cross_entropy(pred, target)


def init_seed(name: str, world: int = 0) -> int:
    """The seed of a model's initial weights and data order, from its name and world: models of
    one training seed do not share a starting point (which, after a short training, every
    estimator would see before the task). World 0 is the committed recipe 2 (the name alone);
    world N hashes ``NAME@worldN``, so each world's networks start elsewhere."""
    key = name if world == 0 else f"{name}@world{world}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little")


def target_scaling(y: np.ndarray) -> tuple[np.ndarray, float]:
    """Recipe 3: a regression target's per-channel mean and pooled sd on the training set. MSE on
    (y - mean) / sd is 1 - R² as the oracle pools it, so every regression task trains on its
    readout's scale with no offset to learn first (the instrument check, docs/benchmark.md: self-
    transfer first for 5 of 5 subset targets, against 1 of 5 with raw targets)."""
    mu = y.mean(axis=(0, 2, 3), keepdims=True)
    return mu, float(np.sqrt(((y - mu) ** 2).mean()))


@dataclass
class TrainResult:
    seconds: float
    losses: list[float] = field(default_factory=list)
    val_loss: float = float("nan")


def train(
    net: TaskNet,
    pre: Preprocessing,
    train_set: Scenes,
    val_set: Scenes,
    epochs: int,
    seed: int,
    batch_size: int = 32,
    lr: float = 2e-3,
    standardise: bool = False,
) -> TrainResult:
    """Adam, one-cycle cosine learning rate, fixed epochs; the task's own inputs (noisy/gray).
    `standardise` (recipe 3): regression targets as :func:`target_scaling` scales them, the
    validation loss on the same scale."""
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    task = net.task
    x = pre.apply(train_set.inputs(task.name))
    y_np, yv_np = train_set.targets[task.name], val_set.targets[task.name]
    if standardise and task.kind == "dense_reg":
        mu, sd = target_scaling(y_np)
        y_np, yv_np = (y_np - mu) / sd, (yv_np - mu) / sd
    y = torch.as_tensor(y_np)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-5)
    steps = epochs * (-(-len(x) // batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for k in range(0, len(x), batch_size):
            idx = order[k : k + batch_size]
            loss = task_loss(task, net(x[idx])[0], y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / len(x))
    net.eval()
    with torch.no_grad():
        xv = pre.apply(val_set.inputs(task.name))
        val = float(task_loss(task, net(xv)[0], torch.as_tensor(yv_np)))
    return TrainResult(time.perf_counter() - t0, losses, val)


def export(net: TaskNet, pre: Preprocessing, path: Path) -> dict[str, Any]:
    """The whole network to ONNX (opset 17, batch dimension symbolic); the encoder output keeps
    the tensor name 'encoder' but is not a graph output (as in any exported task network).
    Returns onnxruntime's agreement with the torch network."""
    return export_torch(
        net,
        tuple(pre.input_shape(1)),
        path,
        output_names=["output"],
        dynamic_batch=True,
        producer="onnxattr.benchmark",
    )
