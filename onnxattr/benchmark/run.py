"""The mini-Taskonomy benchmark: scenes → task networks → space → measured oracle → estimators.

Fixed before any estimator was scored (docs/benchmark.md): the twelve tasks of
:mod:`.scenes`, the encoders of :data:`MODELS`, the training recipe of :mod:`.models`, the head
recipe of :mod:`onnxattr.transfer.heads`, the scene sets and their seeds in :class:`Config`.
``Config.world`` draws a fresh world of the same recipe: every scene set and every network's
initial weights are seeded from it (:func:`scene_seeds`, :func:`.models.init_seed`); world 0 is
the committed one.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OnnxAttrError
from ..preprocess import Preprocessing
from .scenes import SIZE, TASKS, Scenes, generate

Log = Callable[[str], None]


@dataclass(frozen=True)
class ModelSpec:
    """One encoder of the benchmark's space."""

    name: str
    task: str
    framework: str = "pytorch"  # pytorch | keras
    arch: str = "resnet"  # resnet | plain
    input_size: int = SIZE
    seed: int = 0

    @property
    def preprocessing(self) -> dict[str, Any]:
        if self.framework == "keras":  # Keras convention: NHWC, pixels to [-1, 1]
            return {
                "preset": "minus1to1",
                "layout": "nhwc",
                "input_size": [self.input_size, self.input_size],
            }
        return {
            "preset": "imagenet",
            "layout": "nchw",
            "input_size": [self.input_size, self.input_size],
        }

    def pre(self) -> Preprocessing:
        from ..preprocess import PRESETS

        d = dict(self.preprocessing)
        preset = d.pop("preset")
        return Preprocessing.from_dict({**PRESETS[preset], **d, "preset": preset})


PRIMARY = tuple(ModelSpec(t, t) for t in TASKS)
MODELS: tuple[ModelSpec, ...] = (
    *PRIMARY,
    # the same task in another framework (TensorFlow/Keras, exported with tf2onnx)
    ModelSpec("depth.keras", "depth", framework="keras"),
    ModelSpec("edge_texture.keras", "edge_texture", framework="keras"),
    ModelSpec("segment_semantic.keras", "segment_semantic", framework="keras"),
    # the same task with another input size or architecture
    ModelSpec("normals.in32", "normals", input_size=32),
    ModelSpec("segment_semantic.in32", "segment_semantic", input_size=32),
    ModelSpec("reshading.plain", "reshading", arch="plain"),
    # a second training seed
    ModelSpec("depth.s1", "depth", seed=1),
    ModelSpec("normals.s1", "normals", seed=1),
    ModelSpec("edge_texture.s1", "edge_texture", seed=1),
    ModelSpec("segment_semantic.s1", "segment_semantic", seed=1),
)
QUICK_MODELS = tuple(
    m for m in MODELS if m.name in ("depth", "normals", "edge_texture", "depth.s1")
)
LRP_PRESETS = ("epsilon", "epsilon_plus_flat", "epsilon_alpha2_beta1_flat", "alpha2_beta1")
# Pairs of tasks the benchmark is built to relate (3D geometry; image edges)
RELATED = (
    ("depth", "normals"),
    ("normals", "reshading"),
    ("depth", "reshading"),
    ("edge_texture", "edge_occlusion"),
    ("edge_texture", "keypoints2d"),
    ("edge_occlusion", "keypoints3d"),
    ("normals", "curvature"),
    ("autoencoder", "denoise"),
    ("autoencoder", "colorization"),
)
SCENE_SEEDS = {"train": 1, "val": 2, "transfer": 3, "probe": 4}


def scene_seeds(world: int = 0) -> dict[str, int]:
    """The scene sets' seeds in world ``world``: world 0 keeps :data:`SCENE_SEEDS` (the committed
    recipe 2); world N adds 100·N, so no two worlds (nor two sets of one world) share a seed."""
    if world < 0:
        raise OnnxAttrError(f"world must be 0 or more, got {world}")
    return {k: v + 100 * world for k, v in SCENE_SEEDS.items()}


@dataclass
class Config:
    n_train: int = 2000
    n_val: int = 200
    n_transfer: int = 1000
    n_probe: int = 200
    epochs: int = 12
    batch_size: int = 64
    models: tuple[ModelSpec, ...] = MODELS
    methods: tuple[str, ...] = ("saliency", "grad_input", "elrp")
    lrp_presets: tuple[str, ...] = LRP_PRESETS
    quick: bool = False
    world: int = 0  # seeds every scene set and initial weight; 0 = the committed world

    @property
    def scene_seeds(self) -> dict[str, int]:
        return scene_seeds(self.world)

    def settings(self) -> dict[str, Any]:
        d = asdict(self)
        d["models"] = [m.name for m in self.models]
        return d


QUICK = Config(
    n_train=160,
    n_val=40,
    n_transfer=150,
    n_probe=24,
    epochs=1,
    models=QUICK_MODELS,
    methods=("saliency", "grad_input"),
    lrp_presets=(),
    quick=True,
)


def committed_dir() -> Path:
    """The committed encoders, manifest and measured oracle (package data)."""
    return Path(str(resources.files("onnxattr.benchmark") / "data"))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------ training
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
            res = train(net, pre, train_set, val_set, cfg.epochs, seed, cfg.batch_size)
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
                "sha256": _sha(path),
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
    from .models import WIDTHS, init_seed

    task = TASKS[spec.task]
    x = pre.apply(train_set.inputs(spec.task)).numpy()
    y = train_set.targets[spec.task]
    if task.kind == "dense_reg":
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


# ------------------------------------------------------------------------------------ space
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


# ------------------------------------------------------------------------------------ oracle
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


# ------------------------------------------------------------------------------------ sanity
def sanity(oracle_full: Path, manifest: list[dict[str, Any]]) -> dict[str, Any]:
    """Self-transfer ranks, related-task ranks, seed (and framework/architecture) stability."""
    from scipy.stats import spearmanr

    from ..analysis.evaluation import read_oracle

    orc = read_oracle(oracle_full)
    t_idx = {t: i for i, t in enumerate(orc.targets)}
    s_idx = {s: j for j, s in enumerate(orc.sources)}
    primary = [s for s in orc.sources if s in t_idx]
    self_rank = {}
    for t, i in t_idx.items():
        row = orc.values[i, [s_idx[s] for s in primary]]
        order = [primary[j] for j in np.argsort(-row, kind="stable")]
        self_rank[t] = order.index(t) + 1 if t in order else None
    related = {}
    for a, b in RELATED:
        if a in t_idx and b in t_idx:
            for t, s in ((a, b), (b, a)):
                others = [p for p in primary if p != t]
                row = orc.values[t_idx[t], [s_idx[p] for p in others]]
                order = [others[j] for j in np.argsort(-row, kind="stable")]
                related[f"{s} → {t}"] = {"rank": order.index(s) + 1, "of": len(others)}
    # each target row z-scored over all sources: a column then says how a source ranks per
    # target, without the targets' own difficulty (which alone makes any two columns agree)
    z = (orc.values - orc.values.mean(1, keepdims=True)) / orc.values.std(1, keepdims=True)
    variants = {}
    for e in manifest:
        base = e["task"]
        if e["name"] == base or e["name"] not in s_idx or base not in s_idx:
            continue
        rows = [i for t, i in t_idx.items() if t != base]
        kind = (
            "seed"
            if e["seed"] != 0
            else "framework"
            if e["framework"] != "pytorch"
            else "architecture/input"
        )
        variants[e["name"]] = {
            "of": base,
            "kind": kind,
            "spearman_over_other_targets": float(
                spearmanr(z[rows, s_idx[base]], z[rows, s_idx[e["name"]]]).statistic
            ),
            "self_score": float(orc.values[t_idx[base], s_idx[e["name"]]]),
            "primary_self_score": float(orc.values[t_idx[base], s_idx[base]]),
        }
    seeds = [v["spearman_over_other_targets"] for v in variants.values() if v["kind"] == "seed"]
    # the oracle's rankings when the seed-1 encoders replace their seed-0 twins as sources
    swap = {v["of"]: k for k, v in variants.items() if v["kind"] == "seed"}
    row_rho = {}
    if swap:
        alt = [swap.get(p, p) for p in primary]
        for t, i in t_idx.items():
            keep = [j for j, p in enumerate(primary) if p != t]
            a = orc.values[i, [s_idx[primary[j]] for j in keep]]
            b = orc.values[i, [s_idx[alt[j]] for j in keep]]
            row_rho[t] = float(spearmanr(a, b).statistic)
    return {
        "self_rank": self_rank,
        "self_first": sum(r == 1 for r in self_rank.values()),
        "n_targets": len(self_rank),
        "related": related,
        "variants": variants,
        "seed_spearman_mean": float(np.mean(seeds)) if seeds else None,
        "seed_swap_row_spearman": row_rho,
        "seed_swap_row_spearman_mean": float(np.mean(list(row_rho.values()))) if row_rho else None,
    }


# ------------------------------------------------------------------------------------ estimators
def evaluate_estimators(spaces: dict[str, Path], oracle: Path, log: Log) -> list[dict[str, Any]]:
    """Every estimator of the main space, lrp per preset, and random, against `oracle`."""
    from ..analysis.estimators import available_estimators, compute_affinity
    from ..analysis.evaluation import Oracle, evaluate, read_oracle

    orc = read_oracle(oracle)
    names = [n for n in orc.names]
    rows = []
    jobs = [(spaces["main"], e, e) for e in available_estimators(spaces["main"])]
    jobs += [(sp, "lrp", key) for key, sp in spaces.items() if key != "main"]
    ev = None
    for sp, est, label in jobs:
        t0 = time.perf_counter()
        mat, _ = compute_affinity(sp, est, names, use_cache=False)
        secs = time.perf_counter() - t0
        ev = evaluate(mat, orc, top=5)
        per_target = [
            evaluate(mat, Oracle([t], orc.sources, orc.values[i : i + 1]), top=5)
            for i, t in enumerate(orc.targets)
        ]
        p5 = [e.precision[min(5, len(e.precision)) - 1] for e in per_target]
        rows.append(
            {
                **_row(label, ev.precision, ev.spearman, secs),
                "P@5_se": _se(p5),
                "spearman_se": _se(list(ev.spearman_per_target.values())),
            }
        )
        log(f"{label}: P@1 {ev.precision[0]:.3f}  ρ {ev.spearman:.3f} ({secs:.1f} s)")
    if ev is not None:
        rows.append(_row("random (expected)", ev.random_precision, 0.0, 0.0))
        rows.append(_row("oracle", ev.oracle_precision, 1.0, 0.0))
    return rows


def _row(name: str, precision: Sequence[float], rho: float, secs: float) -> dict[str, Any]:
    p = {f"P@{k}": float(precision[k - 1]) if len(precision) >= k else math.nan for k in (1, 3, 5)}
    return {"estimator": name, **p, "spearman": rho, "seconds": secs}


def _se(values: Sequence[float]) -> float:
    """Standard error of the mean over targets (NaN entries dropped)."""
    v = np.array([x for x in values if x is not None and math.isfinite(x)])
    return float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan


def _pm(value: float, se: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.3f}" if se is None or not math.isfinite(se) else f"{value:.3f} ± {se:.3f}"


def table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table; ± = standard error over targets."""
    lines = ["| estimator | P@1 | P@3 | P@5 | Spearman | wall s |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['estimator']} | {r['P@1']:.3f} | {r['P@3']:.3f} | "
            f"{_pm(r['P@5'], r.get('P@5_se'))} | {_pm(r['spearman'], r.get('spearman_se'))}"
            f" | {r['seconds']:.1f} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ driver
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
        if cfg.world != 0:
            raise OnnxAttrError(
                f"--committed reuses world 0's encoders; drop it to train world {cfg.world}"
            )
        src = committed_dir()
        manifest = json.loads((src / "manifest.json").read_text())["models"]
        if cfg.quick:
            keep = {m.name for m in cfg.models}
            manifest = [e for e in manifest if e["name"] in keep]
        for e in manifest:
            dst = out / e["file"]
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / e["file"], dst)
            if _sha(dst) != e["sha256"]:
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
