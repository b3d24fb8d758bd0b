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
