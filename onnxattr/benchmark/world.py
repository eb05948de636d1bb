"""The mini-Taskonomy world: its encoders (:data:`MODELS`), related task pairs, the scene sets'
seeds and the run's :class:`Config`.

Fixed before any estimator was scored (docs/benchmark.md): the twelve tasks of :mod:`.scenes`,
the encoders of :data:`MODELS`, the training recipe of :mod:`.models`, the head recipe of
:mod:`onnxattr.transfer.heads`, the scene sets and their seeds in :class:`Config`.
``Config.world`` draws a fresh world: every scene set and every network's initial weights are
seeded from it (:func:`scene_seeds`, :func:`.models.init_seed`); ``Config.recipe`` is the training
recipe (:data:`RECIPES`). Committed: world 0 under recipe 2, worlds 1-4 under recipe 3.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import OnnxAttrError
from ..preprocess import Preprocessing
from .scenes import SIZE, TASKS

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
# the training recipes a world can be drawn with (docs/benchmark.md)
RECIPES = {
    2: "12 epochs, Adam lr 2e-3 one-cycle, raw regression targets, initial weights seeded per model",
    3: "recipe 2 with each regression target standardised on the training set (MSE = 1 - R²)",
}
COMMITTED_WORLDS = (0, 1, 2, 3, 4)  # world 0 under recipe 2, worlds 1-4 under recipe 3
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
    world: int = 0  # seeds every scene set and initial weight
    # 2: raw regression targets (world 0 as committed); 3: standardised (worlds 1-4 as committed)
    recipe: int = 3

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise OnnxAttrError(f"recipe must be one of {sorted(RECIPES)}, got {self.recipe}")

    @property
    def standardise(self) -> bool:
        return self.recipe >= 3

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


def committed_dir(world: int = 0) -> Path:
    """World `world`'s committed encoders, manifest, measured oracle and sanity (package data):
    world 0 in ``data/``, the others in ``data/worldN/``."""
    if world not in COMMITTED_WORLDS:
        raise OnnxAttrError(
            f"world {world} is not committed (committed: {', '.join(map(str, COMMITTED_WORLDS))}); "
            "drop `use_committed` to train it"
        )
    data = Path(str(resources.files("onnxattr.benchmark") / "data"))
    return data if world == 0 else data / f"world{world}"


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
