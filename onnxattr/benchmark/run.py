"""The mini-Taskonomy benchmark's driver: world (:mod:`.world`) → task networks
(:mod:`.training`) → spaces (:mod:`.spaces`) → measured oracle (:mod:`.oracle`) → sanity
(:mod:`.sanity`) → estimators (:mod:`.scoring`), one module per stage."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import OnnxAttrError
from .oracle import measure_oracle
from .sanity import sanity
from .scoring import evaluate_estimators, table
from .spaces import build_spaces
from .training import train_models
from .world import MODELS, Config, Log, committed_dir, file_sha256


@dataclass
class BenchResult:
    out: Path
    seconds: dict[str, float] = field(default_factory=dict)
    sanity: dict[str, Any] = field(default_factory=dict)
    estimators: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def run_benchmark(
    out: str | Path, cfg: Config | None = None, use_committed: bool = False, log: Log | None = None
) -> BenchResult:
    """Regenerate the benchmark into `out` (or, with `use_committed`, start from the committed
    encoders: space, oracle and evaluation only)."""
    say = log or (lambda *_: None)
    cfg = cfg or Config()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    res = BenchResult(out)
    t_all = time.perf_counter()
    if use_committed:
        src = committed_dir(cfg.world)
        committed = json.loads((src / "manifest.json").read_text())
        manifest = committed["models"]
        # the committed world keeps the recipe it was trained with
        cfg = replace(cfg, recipe=committed["config"].get("recipe", 2))
        if cfg.quick:
            keep = {m.name for m in cfg.models}
            manifest = [e for e in manifest if e["name"] in keep]
        for e in manifest:
            dst = out / e["file"]
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / e["file"], dst)
            if file_sha256(dst) != e["sha256"]:
                raise OnnxAttrError(
                    f"committed encoder {e['file']} does not match its manifest "
                    "sha256; reinstall onnxattr"
                )
        cfg = replace(
            cfg, models=tuple(m for m in MODELS if m.name in {e["name"] for e in manifest})
        )
    else:
        t0 = time.perf_counter()
        manifest = train_models(out, cfg, say)
        res.seconds["train"] = time.perf_counter() - t0
    (out / "manifest.json").write_text(
        json.dumps(
            {
                "config": cfg.settings(),
                "world": cfg.world,
                "recipe": cfg.recipe,
                "scene_seeds": cfg.scene_seeds,
                "models": manifest,
            },
            indent=1,
        )
    )
    t0 = time.perf_counter()
    spaces = build_spaces(out, out, manifest, cfg, say)
    res.seconds["space"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    measure_oracle(spaces["main"], cfg, out, say)
    res.seconds["transfer"] = time.perf_counter() - t0
    res.sanity = sanity(out / "oracle_full.csv", manifest)
    (out / "sanity.json").write_text(json.dumps(res.sanity, indent=1))
    t0 = time.perf_counter()
    for key in ("oracle", "oracle_full"):
        res.estimators[key] = evaluate_estimators(spaces, out / f"{key}.csv", say)
    res.seconds["evaluate"] = time.perf_counter() - t0
    res.seconds["total"] = time.perf_counter() - t_all
    (out / "results.json").write_text(
        json.dumps(
            {
                "world": cfg.world,
                "recipe": cfg.recipe,
                "seconds": res.seconds,
                "estimators": res.estimators,
                "sanity": res.sanity,
            },
            indent=1,
        )
    )
    (out / "results.md").write_text(
        "\n\n".join(f"### against {k}.csv\n\n{table(v)}" for k, v in res.estimators.items()) + "\n"
    )
    return res
