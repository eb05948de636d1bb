"""benchmarks/gpu.sh runs end to end on CPU at a small size (on a GPU it is the timing script)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_script_runs_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    r = subprocess.run(
        [
            "bash",
            str(ROOT / "benchmarks" / "gpu.sh"),
            "--device",
            "cpu",
            "--arch",
            "resnet18",
            "--size",
            "32",
            "--batch",
            "2",
            "--repeat",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["device"] == "cpu" and res["verify_rel_err"] <= 1e-3
    assert set(res["s_per_img"]) == {"saliency", "grad_input", "elrp"}
    assert all(v > 0 for v in res["s_per_img"].values())
    p = res["projection"]
    expect = (res["s_per_img_all3"] * 20 * 1000 + res["per_model_s"] * 20) / 3600
    assert abs(p["total_h"] - expect) < 1e-9 * max(1.0, expect)
    assert "ms/img" in r.stdout and "projected: 20 encoders x 1000 probe images" in r.stdout
