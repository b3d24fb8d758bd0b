"""ONNX variants for the engine tests: nano (the lead's trained ``nano_artifacts`` when the
suite provides them) and tiny (DeiT-Tiny shape, random weights), each as FP32 ONNX, INT8
Q/DQ ONNX (edgevit's own quantizer), calibration table and TensorRT cache."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest


def make_variants(workdir: Path, preset_name: str, num_images: int = 8) -> SimpleNamespace:
    """Export a random-weight model of ``preset_name`` and quantize it with edgevit's quantizer."""
    import onnx
    import torch

    from edgevit.artifacts import ArtifactInfo, sha256_file
    from edgevit.config import preset
    from edgevit.model import VisionTransformer
    from edgevit.preprocess import Preprocess
    from edgevit.quant.calibrate import calibrate
    from edgevit.quant.config import QuantizeConfig
    from edgevit.quant.writer import quantize_model

    workdir.mkdir(parents=True, exist_ok=True)
    cfg = preset(preset_name)
    torch.manual_seed(0)
    model = VisionTransformer(cfg).eval()
    fp32 = workdir / f"{preset_name}.onnx"
    x = torch.randn(2, cfg.in_chans, cfg.img_size, cfg.img_size)
    torch.onnx.export(
        model,
        (x,),
        str(fp32),
        input_names=["images"],
        output_names=["logits"],
        opset_version=17,
        dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
        dynamo=False,
    )
    info = ArtifactInfo(
        model_config=cfg,
        preprocess=Preprocess(cfg.img_size, cfg.in_chans, (0.5,) * cfg.in_chans, (0.25,) * cfg.in_chans),
        class_names=[f"class{i}" for i in range(cfg.num_classes)],
        data="random",
    )
    proto = onnx.load(str(fp32))
    for key, value in info.to_metadata().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(fp32))

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(num_images, cfg.img_size, cfg.img_size, cfg.in_chans), dtype=np.uint8)
    qcfg = QuantizeConfig(method="max", num_images=num_images, batch_size=num_images)
    table = calibrate(fp32, images, info, qcfg, "random", progress=False)
    int8 = workdir / f"{preset_name}.int8.onnx"
    int8_info = ArtifactInfo(
        model_config=cfg,
        preprocess=info.preprocess,
        class_names=info.class_names,
        precision="int8",
        source_sha256=sha256_file(fp32),
        data="random",
    )
    quantize_model(fp32, table, int8, int8_info, qcfg)
    table_path = workdir / f"{preset_name}.max.json"
    cache_path = workdir / f"{preset_name}.max.cache"
    table.save(table_path)
    table.save_trt_cache(cache_path)
    return SimpleNamespace(
        name=preset_name, fp32_onnx=fp32, int8_onnx=int8, calib_table=table_path, trt_cache=cache_path, images=images
    )


@pytest.fixture(scope="session")
def nano_variants(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    try:
        art = request.getfixturevalue("nano_artifacts")
        return SimpleNamespace(
            name="nano",
            fp32_onnx=Path(art.fp32_onnx),
            int8_onnx=Path(art.int8_onnx),
            calib_table=Path(art.calib_table),
            trt_cache=Path(art.trt_cache),
            images=None,
        )
    except pytest.FixtureLookupError:
        return make_variants(tmp_path_factory.mktemp("nano-variants"), "nano")


@pytest.fixture(scope="session")
def tiny_variants(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    return make_variants(tmp_path_factory.mktemp("tiny-variants"), "tiny", num_images=4)
