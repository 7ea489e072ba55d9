"""Shared fixtures: the real membrane data set and small hand-made image folders."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# the session's Ray cluster; the S3-compatible server
pytest_plugins = ["fixtures_ray", "fixtures_s3"]

# note: shipped inside the repository (data/membrane, MIT), so these tests never skip
MEMBRANE = Path(__file__).resolve().parents[1] / "data" / "membrane"


@pytest.fixture(scope="session")
def membrane() -> Path:
    """30 grayscale 512×512 EM images with 0/255 masks."""
    return MEMBRANE


@pytest.fixture
def image_folder(tmp_path: Path) -> Callable[..., Path]:
    """make(n, size=8) writes n grayscale images with half-foreground 0/255 masks into
    tmp_path/data/{images,masks}/NN.png and returns tmp_path/data."""

    def make(n: int, size: int = 8) -> Path:
        root = tmp_path / "data"
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(exist_ok=True)
        rng = np.random.default_rng(n)
        for i in range(n):
            image = rng.integers(0, 256, (size, size), dtype=np.uint8)
            mask = np.zeros((size, size), dtype=np.uint8)
            mask[:, : size // 2] = 255
            Image.fromarray(image).save(root / "images" / f"{i:02d}.png")
            Image.fromarray(mask).save(root / "masks" / f"{i:02d}.png")
        return root

    return make
