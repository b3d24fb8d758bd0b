"""The OpenVINO backend loads the same .onnx artifacts as ONNX Runtime, states its precision
in its name, and agrees with ONNX Runtime. Skipped when openvino is not installed (it is an
optional extra: ``pip install 'edgevit[openvino]'``); the missing-package error is always
tested."""

from __future__ import annotations

import re
import sys
import threading

import numpy as np
import pytest

from edgevit import runtime
from edgevit.errors import ArtifactError, BackendError

try:
    import openvino  # noqa: F401

    HAVE_OV = True
except ImportError:
    HAVE_OV = False

needs_ov = pytest.mark.skipif(not HAVE_OV, reason="openvino is not installed (pip install 'edgevit[openvino]')")


@needs_ov
def test_openvino_runs_the_int8_artifact_like_onnx_runtime(nano_artifacts, digits):
    images = digits.test.images[:64]
    with (
        runtime.load(nano_artifacts.int8_onnx) as ref,
        runtime.load(nano_artifacts.int8_onnx, backend="openvino") as ov,
    ):
        a, b = ref.predict(images), ov.predict(images)
    assert b.logits.shape == a.logits.shape
    assert (a.top1 == b.top1).mean() >= 0.9
    assert (b.top1 == digits.test.labels[:64]).mean() >= 0.5


@needs_ov
@pytest.mark.parametrize("precision", ["default", "f32"])
def test_default_and_f32_hint_match_onnx_runtime_fp32_closely(nano_artifacts, digits, precision):
    x = runtime.load(nano_artifacts.fp32_onnx).preprocess(digits.test.images[:32])
    with (
        runtime.load(nano_artifacts.fp32_onnx) as ref,
        runtime.load(nano_artifacts.fp32_onnx, backend="openvino", precision=precision) as ov,
    ):
        assert ov.backend == f"openvino:CPU:f32({'default' if precision == 'default' else 'hint'})"
        np.testing.assert_allclose(ov.logits(x), ref.logits(x), atol=1e-3)


@needs_ov
def test_the_precision_in_use_is_in_the_backend_name(nano_artifacts):
    with runtime.load(nano_artifacts.int8_onnx, backend="openvino", threads=1) as model:
        # the default is the artifact's own precision: FP32 for everything not quantized
        assert model.backend == "openvino:CPU:f32(default)"
        assert model.runner.threads == 1
        assert "openvino" in repr(model)
    with runtime.load(nano_artifacts.int8_onnx, backend="openvino", precision="auto") as model:
        # OpenVINO's own choice (BF16 on CPUs with BF16 units) is named, never silent
        assert re.fullmatch(r"openvino:CPU:(f32|bf16|f16)\(auto\)", model.backend), model.backend
        assert model.runner.inference_precision in model.backend


@needs_ov
def test_openvino_runner_is_thread_safe(nano_artifacts, digits):
    images = digits.test.images[:40]
    with runtime.load(nano_artifacts.int8_onnx, backend="openvino", precision="f32") as model:
        expected = model.predict(images).logits
        results: list[np.ndarray] = []
        threads = [threading.Thread(target=lambda: results.append(model.predict(images).logits)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(results) == 4
    for got in results:
        np.testing.assert_allclose(got, expected, atol=1e-5)


@needs_ov
def test_closed_runner_and_bad_precision_are_errors(nano_artifacts):
    model = runtime.load(nano_artifacts.int8_onnx, backend="openvino")
    model.close()
    with pytest.raises(BackendError, match="closed"):
        model.logits(np.zeros((1, 1, 8, 8), np.float32))
    with pytest.raises(BackendError, match="unknown OpenVINO precision"):
        runtime.load(nano_artifacts.int8_onnx, backend="openvino", precision="int4")


def test_missing_openvino_says_how_to_install_it(nano_artifacts, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(BackendError, match=re.escape("pip install 'edgevit[openvino]'")):
        runtime.load(nano_artifacts.int8_onnx, backend="openvino")


def test_precision_is_an_openvino_setting_only(nano_artifacts, tmp_path):
    with pytest.raises(BackendError, match="OpenVINO setting"):
        runtime.load(nano_artifacts.int8_onnx, precision="f32")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"x")
    with pytest.raises(ArtifactError, match=r"loads \.onnx models"):
        runtime.load(engine, backend="openvino")
