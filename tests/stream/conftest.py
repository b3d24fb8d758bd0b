"""Fixtures of the stream tests: a model artifact, test-split digits, videos made from them.

The tests pass in any order. To check, ``EDGEVIT_TEST_ORDER=reverse`` (or a number: a
shuffle with that seed) reorders the stream tests of a run."""

from __future__ import annotations

import os
import random
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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    order = os.environ.get("EDGEVIT_TEST_ORDER", "")
    if not order:
        return
    here = Path(__file__).parent
    mine = [i for i, item in enumerate(items) if here in Path(str(item.fspath)).parents]
    chosen = [items[i] for i in mine]
    if order == "reverse":
        chosen.reverse()
    else:
        random.Random(int(order)).shuffle(chosen)
    for i, item in zip(mine, chosen, strict=True):
        items[i] = item
