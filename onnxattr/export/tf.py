"""Parent side of the TensorFlow conversions: run `tf_worker` in a subprocess, check its output.

The interpreter is $ONNXATTR_TF_PYTHON when set (e.g. a separate `.venv-tf/bin/python`), else
the current one. This process never imports TensorFlow.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxattr.errors import OnnxAttrError

from .torch_export import compare_onnx

TF_PINS = "tensorflow-cpu==2.21.0 tf2onnx==1.17.0"


def tf_python() -> str:
    return os.environ.get("ONNXATTR_TF_PYTHON") or sys.executable


def require_tf() -> None:
    """Fail with the install command unless TensorFlow and tf2onnx are reachable."""
    if os.environ.get("ONNXATTR_TF_PYTHON"):
        if not Path(tf_python()).is_file():
            raise OnnxAttrError(
                f"ONNXATTR_TF_PYTHON={tf_python()} does not exist; point it at the python of an "
                f"environment with `pip install {TF_PINS}`"
            )
        return
    missing = [m for m in ("tensorflow", "tf2onnx") if importlib.util.find_spec(m) is None]
    if missing:
        raise OnnxAttrError(
            f"{' and '.join(missing)} not installed (needed for Keras/TFLite models); run "
            f"`pip install {TF_PINS}`"
        )


class _Worker:
    """A long-lived `tf_worker` process: TensorFlow is imported once for all conversions."""

    def __init__(self) -> None:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [tf_python(), "-m", "onnxattr.export.tf_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            env=env,
        )

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith("RESULT "):
                return json.loads(line[len("RESULT ") :])
            if line.startswith("ERROR "):
                raise OnnxAttrError(
                    f"TensorFlow conversion of {Path(job['source']).name} failed: {line[6:].strip()}"
                )
        self.stderr.seek(0)
        tail = (self.stderr.read().strip().splitlines() or ["no output"])[-1]
        raise OnnxAttrError(f"the TensorFlow worker ({tf_python()}) died: {tail}")

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.stderr.close()


_worker: _Worker | None = None


def shutdown() -> None:
    """Stop the worker (frees TensorFlow's memory); the next conversion starts a new one."""
    global _worker
    if _worker is not None:
        _worker.close()
        _worker = None


atexit.register(shutdown)


def convert(job: dict[str, Any], out: Path) -> dict[str, Any]:
    """Run one conversion job; return the check record (onnxruntime vs TF on a seeded input).

    The worker adds the encoder as an extra graph output named 'encoder' for Keras models; it is
    removed here so the file carries the model's own outputs only. The graph truncated at the
    encoder is compared too (`encoder_rel_err`; TFLite jobs name it with `encoder_tensor`):
    some full graphs hold custom TFL_* ops after the encoder that onnxruntime cannot run.
    """
    global _worker
    require_tf()
    job = {"opset": 17, "seed": 0, **job, "out": str(out)}
    if _worker is None or _worker.proc.poll() is not None:
        _worker = _Worker()
    result = _worker.run(job)
    model = onnx.load(str(out))
    keep = [o for o in model.graph.output if o.name != "encoder"]
    if len(keep) != len(model.graph.output):
        del model.graph.output[:]
        model.graph.output.extend(keep)
    model.producer_name = "onnxattr.model_zoo (tf2onnx)"
    onnx.save(model, str(out))
    ref_path = Path(str(out) + ".ref.npz")
    with np.load(ref_path) as npz:
        x = npz["x"]
        refs = {k[4:]: npz[k] for k in npz.files if k.startswith("ref:")}
    ref_path.unlink()
    inp = next(
        i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}
    )
    # Keras jobs name the encoder 'encoder'; TFLite jobs give the TFLite tensor name
    enc = job.get("encoder_tensor") or ("encoder" if "encoder" in refs else None)
    enc_ref = refs.pop(enc, None) if enc else None
    names = [o.name for o in model.graph.output]
    missing = [n for n in refs if n not in names]
    if missing:
        raise OnnxAttrError(f"converted graph lacks outputs {missing} (has {names})")
    check: dict[str, Any] = {"reference": result["reference"]}
    try:
        check.update(
            compare_onnx(out, {inp: x}, list(refs.values()), result["reference"], list(refs))
        )
        check["full_graph_runs"] = True
    except Exception as exc:  # onnxruntime rejects custom-domain ops: noted, encoder still checked
        if enc_ref is None:
            raise
        check["full_graph_runs"] = False
        check["full_graph_error"] = " ".join(str(exc).split())[:300]
    if enc_ref is not None:
        import onnxruntime as ort

        from onnxattr.onnxgraph.graph import truncate

        sess = ort.InferenceSession(
            truncate(model, enc).SerializeToString(), providers=["CPUExecutionProvider"]
        )
        (got,) = sess.run(None, {inp: x})
        if enc_ref.ndim == 4 and got.shape != enc_ref.shape:
            enc_ref = enc_ref.transpose(0, 3, 1, 2)  # tf2onnx moved this tensor to NCHW
        err = np.abs(got.reshape(enc_ref.shape) - enc_ref).max() / max(np.abs(enc_ref).max(), 1e-12)
        check["encoder_rel_err"] = float(err)
    return check
