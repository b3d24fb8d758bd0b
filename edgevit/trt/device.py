"""What device are we on, and what can it do.

Facts come from CUDA (GPU name, compute capability), from the Jetson's own files
(``/proc/device-tree/model``, ``/etc/nv_tegra_release``) and from TensorRT's builder when it
can say (DLA core count). Requests the device cannot honour are refused here, before a
build starts, instead of being silently downgraded.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgevit.errors import BackendError, InputError
from edgevit.trt.trtapi import TrtVersion

# L4T release -> JetPack release (NVIDIA's JetPack archive). Longest prefix wins.
L4T_TO_JETPACK: dict[str, str] = {
    "32.5": "4.5",
    "32.6.1": "4.6",
    "32.7.1": "4.6.1",
    "32.7.2": "4.6.2",
    "32.7.3": "4.6.3",
    "32.7.4": "4.6.4",
    "32.7.5": "4.6.5",
    "32.7.6": "4.6.6",
    "35.1": "5.0.2",
    "35.2.1": "5.1",
    "35.3.1": "5.1.1",
    "35.4.1": "5.1.2",
    "35.5.0": "5.1.3",
    "35.6.0": "5.1.4",
    "35.6.1": "5.1.5",
    "36.2": "6.0 DP",
    "36.3": "6.0",
    "36.4": "6.1",
    "36.4.3": "6.2",
    "36.4.4": "6.2.1",
    "38.2": "7.0",
}


@dataclass(frozen=True)
class JetsonInfo:
    model: str  # e.g. "NVIDIA Jetson AGX Orin Developer Kit"
    l4t: str  # e.g. "36.4.3"
    jetpack: str  # e.g. "6.2", or "" when the L4T release is not in our table

    @property
    def family(self) -> str:
        """nano (Maxwell), tx2, xavier, orin-nano, orin, thor or unknown."""
        m = self.model.lower()
        if "thor" in m:
            return "thor"
        if "orin" in m:
            return "orin-nano" if "nano" in m else "orin"
        if "xavier" in m:
            return "xavier"
        if "tx2" in m:
            return "tx2"
        if "tx1" in m or "nano" in m:
            return "nano"
        return "unknown"


@dataclass(frozen=True)
class DeviceInfo:
    """The GPU an engine is built for or run on."""

    gpu_name: str
    compute_capability: str  # "8.7"
    jetson: JetsonInfo | None = None
    # The CUDA version the device's driver supports (cudaDriverGetVersion): 11.4 on JetPack 5,
    # 12.2 / 12.6 on JetPack 6, 13.x on JetPack 7. cudaRuntimeGetVersion would report the CUDA
    # cuda-python was built with (its cudart is its own), not the device's.
    cuda_driver: str = ""
    dla_cores: int | None = None  # from TensorRT's builder when known
    cuda_python: str = ""  # the cuda-python package version

    @property
    def cc_tuple(self) -> tuple[int, int]:
        major, _, minor = self.compute_capability.partition(".")
        return int(major), int(minor or 0)

    @property
    def has_int8(self) -> bool:
        """INT8 tensor math: compute capability 6.1 or 7.0+ (not the Nano's 5.3 or TX2's 6.2)."""
        cc = self.cc_tuple
        return cc == (6, 1) or cc >= (7, 0)

    @property
    def has_fp16(self) -> bool:
        cc = self.cc_tuple
        return cc >= (5, 3) and cc != (6, 1)  # 6.1 (GTX 10xx) has FP16 storage but 1/64-rate math

    @property
    def dla_possible(self) -> bool:
        """Xavier and AGX Orin / Orin NX have DLA; Nano, TX2, Orin Nano, Thor and PC GPUs do not."""
        if self.dla_cores is not None:
            return self.dla_cores > 0
        return self.jetson is not None and self.jetson.family in ("xavier", "orin")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["jetson"] = asdict(self.jetson) if self.jetson else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DeviceInfo:
        j = d.get("jetson")
        return cls(
            gpu_name=str(d["gpu_name"]),
            compute_capability=str(d["compute_capability"]),
            jetson=JetsonInfo(**j) if j else None,
            cuda_driver=str(d.get("cuda_driver", "")),  # manifests before 2026-12 had only "cuda_runtime"
            dla_cores=d.get("dla_cores"),
            cuda_python=str(d.get("cuda_python", "")),
        )

    def describe(self) -> str:
        text = f"{self.gpu_name} (sm {self.compute_capability})"
        if self.jetson:
            jp = f"JetPack {self.jetson.jetpack}, " if self.jetson.jetpack else ""
            text += f" on {self.jetson.model} ({jp}L4T {self.jetson.l4t})"
        return text


def read_jetson_info(root: str | Path = "/") -> JetsonInfo | None:
    """Jetson model and L4T/JetPack release, or None when this is not a Jetson."""
    root = Path(root)
    model = ""
    for p in (root / "proc/device-tree/model", root / "sys/firmware/devicetree/base/model"):
        try:
            model = p.read_bytes().replace(b"\x00", b"").decode("utf-8", "replace").strip()
            break
        except OSError:
            continue
    l4t = ""
    try:
        text = (root / "etc/nv_tegra_release").read_text(encoding="utf-8", errors="replace")
        # "# R36 (release), REVISION: 4.3, GCID: ..., BOARD: generic, EABI: aarch64, DATE: ..."
        m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
        if m:
            l4t = f"{m.group(1)}.{m.group(2).rstrip('.')}"
    except OSError:
        pass
    if not l4t and "jetson" not in model.lower():
        return None
    return JetsonInfo(model=model or "unknown Jetson", l4t=l4t, jetpack=jetpack_for_l4t(l4t))


def jetpack_for_l4t(l4t: str) -> str:
    best = ""
    for prefix in L4T_TO_JETPACK:
        if (l4t == prefix or l4t.startswith(prefix + ".")) and len(prefix) > len(best):
            best = prefix
    return L4T_TO_JETPACK.get(best, "")


def detect_device(index: int = 0, root: str | Path = "/") -> DeviceInfo:
    """Query CUDA for the GPU's name and compute capability (and the Jetson files).

    Raises:
        BackendError: cuda-python is missing or no CUDA device is usable.
    """
    from edgevit.trt.cudart import check, cuda_python_version, import_cudart, version_text

    cudart = import_cudart()
    count = check(cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
    if not count or index >= count:
        raise BackendError(f"CUDA device {index} does not exist (found {count or 0}); TensorRT needs an NVIDIA GPU")
    props = check(cudart.cudaGetDeviceProperties(index), "cudaGetDeviceProperties")
    name = props.name
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).split(b"\x00", 1)[0].decode("utf-8", "replace")
    driver = check(cudart.cudaDriverGetVersion(), "cudaDriverGetVersion")
    return DeviceInfo(
        gpu_name=str(name).strip(),
        compute_capability=f"{int(props.major)}.{int(props.minor)}",
        jetson=read_jetson_info(root),
        cuda_driver=version_text(int(driver or 0)),
        cuda_python=cuda_python_version(),
    )


def check_request(device: DeviceInfo, precision: str, dla_core: int | None, trt_version: TrtVersion) -> None:
    """Refuse what the device (or this TensorRT) cannot do."""
    where = device.describe()
    if precision in ("int8", "best") and not device.has_int8:
        alt = "--precision fp16" if device.has_fp16 else "--precision fp32"
        raise BackendError(
            f"{where} has no INT8 hardware (needs compute capability 6.1 or 7.0+); "
            f"refusing instead of silently building a slower engine: rebuild with {alt}"
        )
    if precision == "fp16" and not device.has_fp16:
        raise BackendError(f"{where} has no fast FP16; build with --precision fp32")
    if dla_core is None:
        return
    if dla_core < 0:
        raise InputError(f"--dla-core must be 0 or more, got {dla_core}")
    refusal = trt_version.dla_refusal(device.jetson.model if device.jetson else device.gpu_name)
    if refusal:
        raise BackendError(f"{refusal}; drop --dla-core")
    if not device.dla_possible:
        raise BackendError(f"{where} has no DLA (only Xavier, AGX Orin and Orin NX do); drop --dla-core")
    if device.dla_cores is not None and dla_core >= device.dla_cores:
        raise BackendError(f"{where} has {device.dla_cores} DLA core(s); --dla-core must be below {device.dla_cores}")
    if precision == "fp32":
        raise BackendError("DLA runs only FP16 and INT8 layers; use --precision fp16, int8 or best with --dla-core")
