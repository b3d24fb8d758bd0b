"""cuda-python: the stream handle TensorRT gets, error codes, and the per-JetPack pins."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from edgevit.errors import BackendError
from edgevit.trt.cudart import CUDA_PYTHON_PINS, check, stream_handle, version_text


class CudaStream:
    """Like cuda-python's cudaStream_t: int() is the handle; getPtr() the address of its storage."""

    def __init__(self, handle: int) -> None:
        self.handle = handle

    def __int__(self) -> int:
        return self.handle

    def getPtr(self) -> int:
        return id(self) + 16


def test_stream_handle_is_the_handle_not_its_address() -> None:
    s = CudaStream(0x7F00DEAD0000)
    assert stream_handle(s) == 0x7F00DEAD0000 != s.getPtr()
    assert stream_handle(77) == 77


def test_a_stream_without_a_handle_is_refused() -> None:
    class OnlyPtr:
        def getPtr(self) -> int:
            return 1234

    with pytest.raises(BackendError, match="stream handle"):
        stream_handle(OnlyPtr())


def test_insufficient_driver_says_which_cuda_python() -> None:
    class Err(int):
        name = "cudaErrorInsufficientDriver"

    with pytest.raises(BackendError, match=r"error 35|jetpack61"):
        check((Err(35),), "cudaMalloc")
    assert version_text(12060) == "12.6" and version_text(11040) == "11.4" and version_text(0) == ""


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib")
def test_pins_match_pyproject_extras() -> None:
    import tomllib

    data = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    extras = data["project"]["optional-dependencies"]
    for jetpack, extra in (("5", "jetpack5"), ("6.0", "jetpack60"), ("6.1", "jetpack61"), ("7", "jetpack7")):
        assert CUDA_PYTHON_PINS[jetpack].replace(" ", "") in [r.replace(" ", "") for r in extras[extra]], jetpack
    assert not any(r.startswith('cuda-python>=12"') or r == "cuda-python>=12" for r in extras["tensorrt"])
    assert all(";" in r for r in extras["tensorrt"] if r.startswith("cuda-python"))  # one pin per Python line
