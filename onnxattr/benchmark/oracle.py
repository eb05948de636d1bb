"""The measured oracle: every encoder's frozen-feature transfer to every primary task."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .scenes import TASKS, generate
from .world import Config, Log


def transfer_targets(cfg: Config, tasks: Sequence[str]) -> list[Any]:
    from ..transfer import TargetTask

    scenes = generate(cfg.n_transfer, cfg.scene_seeds["transfer"])
    return [
        TargetTask(
            t,
            scenes.inputs(t),
            scenes.targets[t],
            TASKS[t].kind,
            source=f"onnxattr.benchmark.scenes seed {cfg.scene_seeds['transfer']}",
        )
        for t in tasks
    ]


def measure_oracle(space: Path, cfg: Config, out: Path, log: Log) -> dict[str, Any]:
    from ..transfer import measure_transfer, write_outputs

    tasks = [m.task for m in cfg.models if m.name == m.task]
    targets = transfer_targets(cfg, tasks)
    res = measure_transfer(
        space, targets, [m.name for m in cfg.models], cache=out / "transfer-cache", log=log
    )
    full = out / "oracle_full.csv"
    for p in (full, out / "oracle_full.json"):
        p.unlink(missing_ok=True)
    write_outputs(res, full, out / "oracle_full.json")
    primary = [s for s in res.sources if s in tasks]
    _write_csv(
        out / "oracle.csv",
        tasks,
        primary,
        np.array([[res.scores[(t, s)].score for s in primary] for t in tasks]),
    )
    return {"seconds": res.settings["seconds"]}


def _write_csv(path: Path, rows: Sequence[str], cols: Sequence[str], vals: np.ndarray) -> None:
    lines = [",".join(["target", *cols])]
    lines += [",".join([r, *(repr(float(v)) for v in row)]) for r, row in zip(rows, vals)]
    path.write_text("\n".join(lines) + "\n")
