"""Writers of foreign model formats for the import tests, without timm or transformers:
safetensors files, Hugging Face ViT/DeiT folders as ``save_pretrained`` writes them, and
timm-layout state dicts (from :mod:`tests.importer.timm_like`).

``hf_expected.json`` was made once with transformers 5.24 (``/tmp/hfvenv``): a tiny
``ViTForImageClassification`` and ``DeiTForImageClassificationWithTeacher`` (32 px, patch 8,
width 32, 2 layers, 2 heads, 3 labels, eager attention) whose weights are
``rng.standard_normal(shape) * 0.2`` drawn in sorted key order from ``default_rng(0)``, and
their logits on ``default_rng(1).standard_normal((2, 3, 32, 32))``. No weights are stored.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

EXPECTED = json.loads((Path(__file__).with_name("hf_expected.json")).read_text())


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    """The safetensors format: u64 header length, JSON header, raw little-endian data."""
    header: dict = {"__metadata__": metadata or {"format": "pt"}}
    offset, blobs = 0, []
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name], dtype=np.float32)
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        blobs.append(a.tobytes())
        offset += a.nbytes
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def hf_weights(kind: str, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    keys = EXPECTED[kind]["keys"]
    return {k: (rng.standard_normal(tuple(keys[k])) * 0.2).astype(np.float32) for k in sorted(keys)}


def write_hf_folder(folder: Path, kind: str = "vit", preprocessor: dict | None = None) -> Path:
    """A Hugging Face folder as ``save_pretrained`` writes it: config.json + model.safetensors
    (+ preprocessor_config.json)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(EXPECTED[kind]["config"]))
    write_safetensors(folder / "model.safetensors", hf_weights(kind))
    if preprocessor is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return folder


def hf_input() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
