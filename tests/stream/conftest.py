"""Fixtures of the stream tests: a model artifact, test-split digits, videos made from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from stream_doubles import write_linear_onnx


@pytest.fixture(scope="session")
def stream_onnx(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained nano INT8 model from tests/conftest.py when it is there, else a linear
    stand-in ONNX with the same metadata (8x8 grayscale, 10 classes)."""
    try:
        return Path(request.getfixturevalue("nano_artifacts").int8_onnx)
    except pytest.FixtureLookupError:
        return write_linear_onnx(tmp_path_factory.mktemp("stream-model") / "linear.onnx")


@pytest.fixture(scope="session")
def test_digits(request: pytest.FixtureRequest) -> tuple[np.ndarray, np.ndarray]:
    """Test-split digits: uint8 N x 8 x 8 x 1 images and their labels."""
    try:
        data = request.getfixturevalue("digits_test_images")
    except pytest.FixtureLookupError:
        from edgevit.data import load_digits

        test = load_digits().test
        return test.images, test.labels
    if isinstance(data, tuple):
        return np.asarray(data[0]), np.asarray(data[1])
    return np.asarray(data.images), np.asarray(data.labels)
