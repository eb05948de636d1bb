"""Recipes whose weights must be downloaded (not in a wheel): run them where the internet is.

torchvision and timm classifiers, Keras applications, and the Taskonomy encoders of the paper
(PyTorch ports in `visualpriors`). With pretrained=True each fetches its weights through the
framework's own cache (torch hub: $TORCH_HOME; timm: the Hugging Face cache; Keras:
~/.keras/models), so a machine with the files already cached needs no network. With
pretrained=False they build the same architecture randomly initialised: what the tests do here.
None of them is part of the default (offline) `build()`; name them explicitly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from onnxattr.errors import OnnxAttrError
from onnxattr.export import tf as _tf
from onnxattr.export.torch_export import ENCODER_TENSOR, export_torch

from ._registry import IMAGENET_NCHW, ZOO_PRODUCER, ZooEntry, preprocessing, register_model
from .torch_state_dicts import PRE_LOGITS


def _fetch_failed(entry: ZooEntry, exc: Exception) -> OnnxAttrError:
    return OnnxAttrError(
        f"could not fetch the weights of {entry.name} ({type(exc).__name__}: "
        f"{' '.join(str(exc).split())[:200]}); this recipe downloads {entry.source_file}: run it "
        "where that is reachable, or pre-fill the framework's weight cache"
    )


def _final_linear(net: nn.Module, path: str) -> nn.Module:
    mod = net
    for part in path.split("."):
        mod = mod[int(part)] if part.isdigit() else getattr(mod, part)
    return mod


# --------------------------------------------------------------------------- torchvision
# name -> (the classifier layer whose input is the pre-logits vector, its dims)
TORCHVISION = {
    "resnet18": ("fc", 512),
    "resnet50": ("fc", 2048),
    "vgg16": ("classifier.6", 4096),
    "densenet121": ("classifier", 1024),
    "mobilenet_v3_large": ("classifier.3", 1280),
    "efficientnet_b0": ("classifier.1", 1280),
    "convnext_tiny": ("classifier.2", 768),
}


def _torchvision(arch: str, head: str, dims: int) -> None:
    entry = ZooEntry(
        name=f"tv_{arch}",
        task="ImageNet-1k classification",
        framework="pytorch",
        architecture=f"{arch} (torchvision)",
        training_data="ImageNet-1k",
        encoder_node=ENCODER_TENSOR,
        encoder_reason=f"{PRE_LOGITS} ({dims}-d)",
        preprocessing=dict(IMAGENET_NCHW),
        licence="BSD-3-Clause (torchvision weights)",
        package="torchvision",
        version="",
        source_file=f"torchvision {arch} weights='DEFAULT'",
        offline=False,
    )

    @register_model(entry)
    def recipe(entry: ZooEntry, out: Path, pretrained: bool = True) -> dict[str, Any]:
        import torchvision

        try:
            net = torchvision.models.get_model(arch, weights="DEFAULT" if pretrained else None)
        except (OSError, RuntimeError) as exc:  # URLError is an OSError
            raise _fetch_failed(entry, exc) from exc
        return export_torch(
            net,
            (1, 3, 224, 224),
            out,
            encoder_at=_final_linear(net, head),
            encoder_is_input=True,
            output_names=["logits"],
            producer=ZOO_PRODUCER,
        )


for _arch, (_head, _dims) in TORCHVISION.items():
    _torchvision(_arch, _head, _dims)


# --------------------------------------------------------------------------- timm
# timm name -> (mean, std, dims); values are timm's pretrained_cfg (checked in the tests)
TIMM = {
    "resnet50.a1_in1k": (IMAGENET_NCHW["mean"], IMAGENET_NCHW["std"], 2048),
    "efficientnet_b0.ra_in1k": (IMAGENET_NCHW["mean"], IMAGENET_NCHW["std"], 1280),
    "convnext_tiny.fb_in1k": (IMAGENET_NCHW["mean"], IMAGENET_NCHW["std"], 768),
    "vit_small_patch16_224.augreg_in21k_ft_in1k": ([0.5] * 3, [0.5] * 3, 384),
}


def _timm(model_name: str, mean: list[float], std: list[float], dims: int) -> None:
    short = model_name.split(".")[0]
    entry = ZooEntry(
        name=f"timm_{short}",
        task="ImageNet-1k classification",
        framework="pytorch",
        architecture=f"{model_name} (timm)",
        training_data="ImageNet-21k + ImageNet-1k" if "in21k" in model_name else "ImageNet-1k",
        encoder_node=ENCODER_TENSOR,
        encoder_reason=f"{PRE_LOGITS} ({dims}-d"
        + (", class token after the final norm)" if "vit" in short else ")"),
        preprocessing=preprocessing((224, 224), mean=mean, std=std),
        licence="Apache-2.0 (timm); weights per model card",
        package="timm",
        version="",
        source_file=f"hf-hub timm/{model_name}",
        offline=False,
    )

    @register_model(entry)
    def recipe(entry: ZooEntry, out: Path, pretrained: bool = True) -> dict[str, Any]:
        try:
            import timm
        except ImportError:
            raise OnnxAttrError("timm is not installed; run `pip install timm`") from None
        try:
            net = timm.create_model(model_name, pretrained=pretrained)
        except (OSError, RuntimeError) as exc:
            raise _fetch_failed(entry, exc) from exc
        return export_torch(
            net,
            (1, 3, 224, 224),
            out,
            encoder_at=net.get_classifier(),
            encoder_is_input=True,
            output_names=["logits"],
            producer=ZOO_PRODUCER,
        )


for _name, (_mean, _std, _dims) in TIMM.items():
    _timm(_name, _mean, _std, _dims)


# --------------------------------------------------------------------------- Keras applications
# app -> preprocessing of keras.applications.<module>.preprocess_input
KERAS_APPS = {
    "MobileNetV2": preprocessing((224, 224), layout="nhwc", scale=1 / 127.5, mean=[1.0] * 3),
    "ResNet50": preprocessing(
        (224, 224), layout="nhwc", color="bgr", scale=1.0, mean=[103.939, 116.779, 123.68]
    ),
    "DenseNet121": preprocessing(
        (224, 224), layout="nhwc", mean=IMAGENET_NCHW["mean"], std=IMAGENET_NCHW["std"]
    ),
}


def _keras_app(app: str, prep: dict[str, Any]) -> None:
    entry = ZooEntry(
        name=f"keras_{app.lower()}",
        task="ImageNet-1k classification",
        framework="keras",
        architecture=f"keras.applications.{app}",
        training_data="ImageNet-1k",
        encoder_node="encoder",
        encoder_reason=PRE_LOGITS + " (input of the 'predictions' layer)",
        preprocessing=prep,
        licence="Apache-2.0 (Keras); weights per Keras applications",
        package="keras",
        version="",
        source_file=f"keras.applications.{app}(weights='imagenet')",
        offline=False,
        needs_tf=True,
    )

    @register_model(entry)
    def recipe(entry: ZooEntry, out: Path, pretrained: bool = True) -> dict[str, Any]:
        job = {
            "kind": "keras_app",
            "source": entry.source_file,
            "app": app,
            "weights": "imagenet" if pretrained else None,
            "encoder_layer": "predictions",
            "encoder_is_input": True,
        }
        return _tf.convert(job, out)


for _app, _prep in KERAS_APPS.items():
    _keras_app(_app, _prep)


# --------------------------------------------------------------------------- Taskonomy
#: The 20 single-image Taskonomy tasks of the attribution-map paper, in its order, mapped to
#: visualpriors' names (the Taskonomy oracle CSVs, e.g. tests/data/, use the paper's names).
TASKONOMY_TASKS = {
    "autoencoder": "autoencoding",
    "curvature": "curvature",
    "denoise": "denoising",
    "edge2d": "edge_texture",
    "edge3d": "edge_occlusion",
    "keypoint2d": "keypoints2d",
    "keypoint3d": "keypoints3d",
    "colorization": "colorization",
    "reshade": "reshading",
    "rgb2depth": "depth_zbuffer",
    "rgb2mist": "depth_euclidean",
    "rgb2sfnorm": "normal",
    "room_layout": "room_layout",
    "segment25d": "segment_unsup25d",
    "segment2d": "segment_unsup2d",
    "vanishing_point": "vanishing_point",
    "segmentsemantic": "segment_semantic",
    "class_1000": "class_object",
    "class_places": "class_scene",
    "inpainting_whole": "inpainting",
}
TASKONOMY_PREFIX = "taskonomy_"


def taskonomy_task(model_name: str) -> str | None:
    """The paper's task name of a Taskonomy zoo model ('taskonomy_rgb2depth' -> 'rgb2depth')."""
    task = model_name.removeprefix(TASKONOMY_PREFIX)
    return task if model_name.startswith(TASKONOMY_PREFIX) and task in TASKONOMY_TASKS else None


def _taskonomy(task: str, vp_task: str) -> None:
    entry = ZooEntry(
        name=f"{TASKONOMY_PREFIX}{task}",
        task=task,
        framework="pytorch",
        architecture="Taskonomy encoder (ResNet-50 trunk + 8-channel compression, visualpriors)",
        training_data="Taskonomy (indoor scenes)",
        encoder_node=ENCODER_TENSOR,
        encoder_reason="the Taskonomy representation: the encoder output (8x16x16) that every "
        "Taskonomy decoder and transfer function reads, as in the paper",
        # Taskonomy feeds images in [-1, 1] at 256x256
        preprocessing=preprocessing((256, 256), scale=1 / 127.5, mean=[1.0] * 3),
        licence="MIT (visualpriors; Taskonomy models)",
        package="visualpriors",
        version="0.3.5",
        source_file=f"visualpriors TASKONOMY_PRETRAINED_URLS['{vp_task}_encoder']",
        offline=False,
        notes="GroupNorm output normalisation of visualpriors is off (normalize_outputs=False): "
        "it is not part of the trained network",
    )

    @register_model(entry)
    def recipe(entry: ZooEntry, out: Path, pretrained: bool = True) -> dict[str, Any]:
        import torch

        try:
            from visualpriors.taskonomy_network import (
                TASKONOMY_PRETRAINED_URLS,
                TaskonomyEncoder,
            )
        except ImportError:
            raise OnnxAttrError(
                "visualpriors is not installed; run `pip install visualpriors==0.3.5`"
            ) from None
        net = TaskonomyEncoder(normalize_outputs=False)
        if pretrained:
            try:
                ckpt = torch.hub.load_state_dict_from_url(
                    TASKONOMY_PRETRAINED_URLS[vp_task + "_encoder"],
                    map_location="cpu",
                    progress=False,
                )
            except (OSError, RuntimeError) as exc:
                raise _fetch_failed(entry, exc) from exc
            net.load_state_dict(ckpt["state_dict"])
        return export_torch(
            net,
            (1, 3, 256, 256),
            out,
            encoder_at=net.relu1,
            encoder_is_input=False,
            output_names=["representation"],
            producer=ZOO_PRODUCER,
        )


for _task, _vp in TASKONOMY_TASKS.items():
    _taskonomy(_task, _vp)
