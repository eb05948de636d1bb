#!/usr/bin/env bash
# The GPU path end to end, in well under 5 minutes on one GPU: ResNet-50 encoder (random weights,
# nothing downloaded) through onnxattr's conversion, verified with onnxruntime's CUDA provider,
# s/img per attribution method at batch 64 and 256x256, and the projected time for
# 20 Taskonomy-size encoders x 1000 probe images x 3 methods.
#   bash benchmarks/gpu.sh                    # needs: pip install -e '.[gpu]' (see README)
#   bash benchmarks/gpu.sh --device cpu --batch 2 --size 64 --arch resnet18   # CPU smoke run
# Extra arguments go to benchmarks/bench_gpu.py (--device, --batch, --size, --arch, --json ...).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 - <<'PY'
import onnxruntime as ort, torch
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), GPUs: "
      f"{[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}; "
      f"onnxruntime {ort.__version__} providers: {ort.get_available_providers()}")
PY
exec timeout 290 python3 benchmarks/bench_gpu.py --device cuda --batch 64 --size 256 --arch resnet50 "$@"
