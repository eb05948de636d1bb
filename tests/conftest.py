from __future__ import annotations

import warnings

import numpy as np
import pytest
import torchvision  # noqa: F401  (imported after TensorFlow has built a model, it segfaults)

from onnxattr.probe import ProbeSet

warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")


def random_probe(n: int = 6, size: int = 32, seed: int = 0) -> ProbeSet:
    """Smooth random images: structured enough that maps are not noise."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, size=(n, 4, 4, 3))
    up = np.kron(base, np.ones((1, size // 4, size // 4, 1)))
    noise = rng.normal(0, 20, size=up.shape)
    images = np.clip(up + noise, 0, 255).astype(np.uint8)
    return ProbeSet(images, [f"img{i}.png" for i in range(n)], source="test", seed=seed)


@pytest.fixture
def probe() -> ProbeSet:
    return random_probe()
