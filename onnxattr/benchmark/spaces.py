"""The benchmark's model spaces: its probe scenes, every encoder added with every method."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .scenes import generate
from .world import Config, Log


def probe_set(cfg: Config) -> Any:
    from ..probe import ProbeSet

    scenes = generate(cfg.n_probe, cfg.scene_seeds["probe"])
    return ProbeSet(
        scenes.images,
        [f"scene{i:04d}" for i in range(len(scenes))],
        source="onnxattr.benchmark.scenes",
        seed=cfg.scene_seeds["probe"],
    )


def build_spaces(
    out: Path, enc_dir: Path, manifest: list[dict[str, Any]], cfg: Config, log: Log
) -> dict[str, Path]:
    """One space with every method, and one per lrp preset (a space holds one `lrp` map set)."""
    from ..pipeline import add_model
    from ..space import ModelSpace

    probe = probe_set(cfg)
    spaces = {"main": out / "space.h5"}
    spaces.update({f"lrp:{p}": out / f"space-lrp-{p}.h5" for p in cfg.lrp_presets})
    for key, sp in spaces.items():
        sp.unlink(missing_ok=True)
        ModelSpace(sp).write_probe(probe)
        methods = cfg.methods if key == "main" else ("lrp",)
        params = {} if key == "main" else {"lrp": {"preset": key.split(":", 1)[1]}}
        t0 = time.perf_counter()
        for e in manifest:
            add_model(
                sp,
                enc_dir / e["file"],
                encoder_node=e["encoder_node"],
                name=e["name"],
                preprocessing=e["preprocessing"],
                methods=methods,
                method_params=params,
                batch_size=32,
                progress=False,
                metadata={"framework": e["framework"], "task": e["task"]},
            )
        log(
            f"space {sp.name}: {len(manifest)} models × {', '.join(methods)} "
            f"({time.perf_counter() - t0:.0f} s)"
        )
    return spaces
