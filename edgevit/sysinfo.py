"""A one-line description of the machine, for every recorded measurement."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def describe_machine() -> str:
    """e.g. ``Intel(R) Xeon(R) Processor, 2 cores, Linux 6.1 x86_64, Python 3.11.7``."""
    return (
        f"{cpu_model()}, {cpu_count()} cores, {platform.system()} {platform.release().split('-')[0]} "
        f"{platform.machine()}, Python {platform.python_version()}"
    )


def cpu_flags() -> set[str]:
    """The CPU's feature flags (``/proc/cpuinfo``; empty where unknown)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def int8_dot_saturates() -> bool:
    """True on x86 CPUs without VNNI (AVX-512 VNNI, AVX-VNNI or AMX): there the u8 x s8 integer
    kernels of ONNX Runtime and OpenVINO multiply with ``VPMADDUBSW``, whose 16-bit pair sums
    saturate, so their INT8 results drift from what the Q/DQ graph (and TensorRT) computes."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return False
    flags = cpu_flags()
    if not flags:
        return False
    return not ({"avx512_vnni", "avx_vnni", "amx_int8"} & flags)
