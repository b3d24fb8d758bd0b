"""Random-weight models of a preset (e.g. ``tiny``, the DeiT-Tiny shape) for speed
measurements: a checkpoint, its FP32 ONNX and edgevit's INT8 Q/DQ ONNX, calibrated on
random images. Random weights time exactly like trained ones; the output says so.

Needs torch (imported here only), like ``edgevit export``.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgevit.artifacts import ArtifactInfo, atomic_output, sha256_file, write_bytes_atomic
from edgevit.preprocess import Preprocess

RANDOM_NOTE = "random weights, random calibration images: for speed only, accuracy is meaningless"


@dataclass
class SyntheticModel:
    preset: str
    checkpoint: Path
    fp32_onnx: Path
    int8_onnx: Path


def make_synthetic(preset_name: str, workdir: str | Path, calib_images: int = 8, seed: int = 0) -> SyntheticModel:
    """Write (or reuse, when all three exist) ``<preset>.pt``, ``<preset>.onnx`` and
    ``<preset>.int8.onnx`` under ``workdir``."""
    workdir = Path(workdir)
    out = SyntheticModel(
        preset_name,
        workdir / f"{preset_name}.pt",
        workdir / f"{preset_name}.onnx",
        workdir / f"{preset_name}.int8.onnx",
    )
    if out.checkpoint.is_file() and out.fp32_onnx.is_file() and out.int8_onnx.is_file():
        return out

    import onnx
    import torch

    from edgevit.config import preset
    from edgevit.model import VisionTransformer
    from edgevit.quant.calibrate import calibrate
    from edgevit.quant.config import QuantizeConfig
    from edgevit.quant.writer import quantize_model
    from edgevit.train import CHECKPOINT_FORMAT

    cfg = preset(preset_name)
    torch.manual_seed(seed)
    model = VisionTransformer(cfg).eval()
    pre = Preprocess(cfg.img_size, cfg.in_chans, (0.5,) * cfg.in_chans, (0.25,) * cfg.in_chans)
    names = [f"class{i}" for i in range(cfg.num_classes)]
    buf = io.BytesIO()
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "model": model.state_dict(),
            "model_config": cfg.to_dict(),
            "preprocess": pre.to_dict(),
            "class_names": names,
            "data": "random",
            "metrics": {},
        },
        buf,
    )
    write_bytes_atomic(out.checkpoint, buf.getvalue())

    info = ArtifactInfo(model_config=cfg, preprocess=pre, class_names=names, data="random")
    info.extra["note"] = RANDOM_NOTE
    x = torch.randn(2, cfg.in_chans, cfg.img_size, cfg.img_size)
    onnx_buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x,),
            onnx_buf,
            input_names=["images"],
            output_names=["logits"],
            opset_version=17,
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
            dynamo=False,
        )
    proto = onnx.load_from_string(onnx_buf.getvalue())
    for key, value in info.to_metadata().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    with atomic_output(out.fp32_onnx) as tmp:
        onnx.save_model(proto, str(tmp))

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(calib_images, cfg.img_size, cfg.img_size, cfg.in_chans), dtype=np.uint8)
    qcfg = QuantizeConfig(method="max", num_images=calib_images, batch_size=calib_images)
    table = calibrate(out.fp32_onnx, images, info, qcfg, "random", progress=False)
    int8_info = ArtifactInfo(
        model_config=cfg,
        preprocess=pre,
        class_names=names,
        source_sha256=sha256_file(out.fp32_onnx),
        data="random",
        extra={"note": RANDOM_NOTE},
    )
    quantize_model(out.fp32_onnx, table, out.int8_onnx, int8_info, qcfg)
    return out
