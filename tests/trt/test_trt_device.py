"""Device facts and refusals: Jetson files, INT8/FP16/DLA capability per device and per
TensorRT (DLA gone in 11.0-11.4.0, back on AGX Orin from 11.4.1), and what CUDA the device has."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from edgevit.errors import BackendError, InputError
from edgevit.trt import device as device_mod
from edgevit.trt.device import DeviceInfo, JetsonInfo, check_request, jetpack_for_l4t, read_jetson_info
from edgevit.trt.trtapi import TrtVersion

V85, V103, V1013, V110, V1140, V1141 = (
    TrtVersion.parse(v) for v in ("8.5.2", "10.3.0", "10.13.3", "11.0.0", "11.4.0", "11.4.1")
)
NANO = DeviceInfo("NVIDIA Tegra X1", "5.3", JetsonInfo("NVIDIA Jetson Nano Developer Kit", "32.7.1", "4.6.1"))
XAVIER = DeviceInfo(
    "Xavier", "7.2", JetsonInfo("NVIDIA Jetson Xavier NX Developer Kit", "35.4.1", "5.1.2"), dla_cores=2
)
AGX_ORIN = DeviceInfo("Orin", "8.7", JetsonInfo("NVIDIA Jetson AGX Orin Developer Kit", "36.4.3", "6.2"), dla_cores=2)
ORIN_NX = DeviceInfo(
    "Orin", "8.7", JetsonInfo("NVIDIA Jetson Orin NX Engineering Reference Developer Kit", "36.4.3", "6.2")
)
ORIN_NANO = DeviceInfo("Orin", "8.7", JetsonInfo("NVIDIA Jetson Orin Nano Developer Kit", "36.4.3", "6.2"))
THOR = DeviceInfo("NVIDIA Thor", "11.0", JetsonInfo("NVIDIA Jetson AGX Thor Developer Kit", "38.2", "7.0"))


def test_int8_refused_on_jetson_nano() -> None:
    with pytest.raises(BackendError, match=r"no INT8 hardware.*--precision fp16"):
        check_request(NANO, "int8", None, V85)
    with pytest.raises(BackendError, match="no INT8"):
        check_request(NANO, "best", None, V85)
    check_request(NANO, "fp16", None, V85)  # FP16 is the Nano's ceiling


@pytest.mark.parametrize("device", [ORIN_NANO, THOR, NANO])
def test_dla_refused_where_there_is_none(device: DeviceInfo) -> None:
    with pytest.raises(BackendError, match="has no DLA"):
        check_request(device, "fp16", 0, V103 if device is not THOR else V1013)


def test_dla_rules_on_devices_that_have_one() -> None:
    check_request(AGX_ORIN, "int8", 1, V103)
    check_request(XAVIER, "fp16", 0, V85)
    with pytest.raises(BackendError, match="must be below 2"):
        check_request(AGX_ORIN, "int8", 2, V103)
    with pytest.raises(BackendError, match="only FP16 and INT8"):
        check_request(AGX_ORIN, "fp32", 0, V103)
    with pytest.raises(InputError):
        check_request(AGX_ORIN, "int8", -1, V103)


def test_dla_on_tensorrt_11_follows_nvidia_support() -> None:
    """11.0-11.4.0: no DLA on Jetson; 11.4.1: back on AGX Orin (JetPack 7.2.2+), not on Orin NX."""
    for version in (V110, V1140):
        with pytest.raises(BackendError, match=r"no DLA on Jetson.*11\.4\.1"):
            check_request(AGX_ORIN, "int8", 0, version)
    check_request(AGX_ORIN, "int8", 0, V1141)
    check_request(AGX_ORIN, "fp16", 1, TrtVersion.parse("11.6.0"))
    with pytest.raises(BackendError, match="only on Jetson AGX Orin"):
        check_request(ORIN_NX, "int8", 0, V1141)
    assert TrtVersion.parse("1.7.1", module="tensorrt_rtx").dla_refusal("NVIDIA Jetson AGX Orin") != ""


def test_jetson_files_are_read(tmp_path: Path) -> None:
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "etc").mkdir()
    (tmp_path / "proc/device-tree/model").write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\x00")
    (tmp_path / "etc/nv_tegra_release").write_text(
        "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025\n"
    )
    info = read_jetson_info(tmp_path)
    assert info == JetsonInfo("NVIDIA Jetson AGX Orin Developer Kit", "36.4.3", "6.2")
    assert info.family == "orin"
    assert read_jetson_info(tmp_path / "nothing") is None


@pytest.mark.parametrize(
    ("l4t", "jetpack"),
    [("32.7.1", "4.6.1"), ("35.2.1", "5.1"), ("35.4.1", "5.1.2"), ("36.3.0", "6.0"), ("36.4.3", "6.2"), ("99.1", "")],
)
def test_l4t_to_jetpack(l4t: str, jetpack: str) -> None:
    assert jetpack_for_l4t(l4t) == jetpack


def test_device_families_and_capabilities() -> None:
    assert not NANO.has_int8 and NANO.has_fp16 and not NANO.dla_possible
    assert AGX_ORIN.has_int8 and AGX_ORIN.dla_possible
    assert not ORIN_NANO.dla_possible and ORIN_NANO.jetson.family == "orin-nano"
    assert THOR.jetson.family == "thor" and not THOR.dla_possible
    assert not DeviceInfo("Jetson TX2", "6.2").has_int8
    assert DeviceInfo.from_dict(AGX_ORIN.to_dict()) == AGX_ORIN


class _Err(int):
    name = "cudaSuccess"


class _FakeCudart:
    """Answers like cuda-python 12.9 on a JetPack 6.1 Orin: its own cudart is 12.9, the driver 12.6."""

    def cudaGetDeviceCount(self):
        return _Err(0), 1

    def cudaGetDeviceProperties(self, index):
        return _Err(0), SimpleNamespace(name=b"Orin\x00\x00", major=8, minor=7)

    def cudaRuntimeGetVersion(self):
        return _Err(0), 12090

    def cudaDriverGetVersion(self):
        return _Err(0), 12060


def test_device_cuda_is_the_drivers_not_cuda_pythons(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """cudaRuntimeGetVersion answers with cuda-python's own cudart; the device's CUDA is the driver's."""
    import edgevit.trt.cudart as cudart_mod

    monkeypatch.setattr(cudart_mod, "import_cudart", lambda: _FakeCudart())
    monkeypatch.setattr(cudart_mod, "cuda_python_version", lambda: "12.9.10")
    info = device_mod.detect_device(root=tmp_path)
    assert info.gpu_name == "Orin" and info.compute_capability == "8.7"  # bytes name decoded on Python 3.8 too
    assert info.cuda_driver == "12.6" and info.cuda_python == "12.9.10"
    legacy = {**info.to_dict(), "cuda_runtime": "12.9"}
    del legacy["cuda_driver"]
    assert (
        DeviceInfo.from_dict(legacy).cuda_driver == ""
    )  # an old manifest's cuda-python version is not taken as the device's
