"""Shared fixtures: one briefly trained ``nano`` model on the built-in digits, exported
and quantized once per test session (about 10 s), and the digits test split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest


@dataclass
class NanoArtifacts:
    run_dir: Path
    checkpoint: Path
    fp32_onnx: Path
    int8_onnx: Path
    calib_table: Path
    trt_cache: Path
    test_acc: float


@pytest.fixture(scope="session")
def digits():
    from edgevit.data import load_digits

    return load_digits()


@pytest.fixture(scope="session")
def digits_test_images(digits) -> tuple[np.ndarray, np.ndarray]:
    """uint8 N x 8 x 8 x 1 test images and their labels."""
    return digits.test.images, digits.test.labels


@pytest.fixture(scope="session")
def nano_artifacts(tmp_path_factory) -> NanoArtifacts:
    """A nano model trained for 15 epochs (about 90% test top-1), its FP32 ONNX, INT8
    Q/DQ ONNX, calibration table and TensorRT cache."""
    from edgevit.export import export_onnx
    from edgevit.quant.config import QuantizeConfig
    from edgevit.quant.quantize import quantize_onnx
    from edgevit.train import TrainConfig, train

    run = tmp_path_factory.mktemp("nano")
    trained = train(TrainConfig(epochs=15, seed=0, threads=1), run, progress=False)
    fp32 = export_onnx(trained.checkpoint, run / "model.onnx").path
    q = quantize_onnx(
        fp32, run / "model.int8.onnx", QuantizeConfig(num_images=256), calib_dir=run / "calib", progress=False
    )
    return NanoArtifacts(
        run_dir=run,
        checkpoint=trained.checkpoint,
        fp32_onnx=fp32,
        int8_onnx=q.path,
        calib_table=q.table_path,
        trt_cache=q.cache_path,
        test_acc=trained.metrics["test_acc"],
    )
