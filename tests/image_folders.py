"""Writes small ImageFolder-style data sets for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def make_image_folder(
    root: Path, classes: dict[str, int], size: int = 16, seed: int = 0, split: str | None = None
) -> Path:
    """Write PNGs: ``classes`` maps class name -> image count. Each class gets its own
    brightness pattern so a model can tell them apart."""
    import cv2

    rng = np.random.default_rng(seed)
    base = root / split if split else root
    for ci, (name, count) in enumerate(classes.items()):
        d = base / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            img = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
            img[:, ci * 3 % size : ci * 3 % size + 3] = 250
            cv2.imwrite(str(d / f"{name}_{i}.png"), img)
    return root
