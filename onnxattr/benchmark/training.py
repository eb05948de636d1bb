"""Train and export the world's task networks (PyTorch here, Keras twins in the TF worker)."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ..preprocess import Preprocessing
from .scenes import TASKS, Scenes, generate
from .world import Config, Log, ModelSpec, file_sha256


def train_models(out: Path, cfg: Config, log: Log) -> list[dict[str, Any]]:
    """Train and export every encoder of `cfg`; returns the manifest entries."""
    import torch

    from .models import TaskNet, export, init_seed, train

    t0 = time.perf_counter()
    train_set = generate(cfg.n_train, cfg.scene_seeds["train"])
    val_set = generate(cfg.n_val, cfg.scene_seeds["val"])
    log(f"scenes: {cfg.n_train} train + {cfg.n_val} validation ({time.perf_counter() - t0:.0f} s)")
    entries = []
    for i, spec in enumerate(cfg.models, 1):
        path = out / "encoders" / f"{spec.name}.onnx"
        pre = spec.pre()
        ts = time.perf_counter()
        if spec.framework == "keras":
            check = _train_keras(spec, pre, train_set, cfg, path)
            info: dict[str, Any] = {"tf2onnx_check": check}
        else:
            seed = init_seed(spec.name, cfg.world)
            torch.manual_seed(seed)
            net = TaskNet(TASKS[spec.task], spec.arch)
            res = train(
                net, pre, train_set, val_set, cfg.epochs, seed, cfg.batch_size,
                standardise=cfg.standardise,
            )
            export(net, pre, path)
            info = {
                "train_loss": res.losses,
                "val_loss": res.val_loss,
                "params": sum(p.numel() for p in net.parameters()),
            }
        secs = time.perf_counter() - ts
        entries.append(
            {
                **asdict(spec),
                "file": f"encoders/{spec.name}.onnx",
                "encoder_node": "encoder",
                "preprocessing": spec.preprocessing,
                "sha256": file_sha256(path),
                "train_seconds": round(secs, 1),
                **info,
            }
        )
        log(
            f"[{i}/{len(cfg.models)}] trained {spec.name} ({spec.framework}, {spec.arch}, "
            f"{spec.input_size}px, seed {spec.seed}) in {secs:.0f} s"
        )
    return entries


def _train_keras(
    spec: ModelSpec, pre: Preprocessing, train_set: Scenes, cfg: Config, path: Path
) -> dict[str, Any]:
    from ..export import tf as _tf
    from .models import WIDTHS, init_seed, target_scaling

    task = TASKS[spec.task]
    x = pre.apply(train_set.inputs(spec.task)).numpy()
    y = train_set.targets[spec.task]
    if task.kind == "dense_reg":
        if cfg.standardise:
            mu, sd = target_scaling(y)
            y = (y - mu) / sd
        y = y.transpose(0, 2, 3, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = path.with_suffix(".train.npz")
    np.savez(data, x=x, y=y)
    try:
        return _tf.convert(
            {
                "kind": "onnxattr.benchmark.keras_twin:job",
                "source": str(data),
                "seed": init_seed(spec.name, cfg.world),
                "task_kind": task.kind,
                "channels": task.channels,
                "widths": list(WIDTHS),
                "epochs": cfg.epochs,
                "batch_size": cfg.batch_size,
            },
            path,
        )
    finally:
        data.unlink(missing_ok=True)
