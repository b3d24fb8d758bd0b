#!/usr/bin/env python3
"""Prove that edgevit's device side installs on every JetPack, without a Jetson.

For each JetPack: the requirements of the edgevit wheel with that JetPack's extra, for its
Python, resolved by `pip install --dry-run` for the aarch64 manylinux tags (all three:
cuda-python < 12.8 wheels are tagged manylinux_2_17 / manylinux2014 only); the resolved
cuda-python must be the one that matches the JetPack's CUDA. Needs PyPI.

pip evaluates environment markers (``python_version < '3.9'``) against the Python running it,
not ``--python-version``: so the wheel's markers are evaluated here, for the target Python,
and pip resolves the resulting plain requirements. Usage: check_jetpack_deps.py dist/edgevit-*.whl
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import zipfile
from email.parser import Parser
from pathlib import Path

try:
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet
except ImportError:  # pip vendors it
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.specifiers import SpecifierSet

PLATFORMS = ["manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64"]
# (JetPack, Python, extra, cuda-python version prefix the resolution must give)
CASES = [
    ("5.1 (CUDA 11.4)", "3.8", "jetpack5", "11.8."),
    ("5.1 (CUDA 11.4)", "3.8", "tensorrt", "11.8."),
    ("6.0 (CUDA 12.2)", "3.10", "jetpack60", "12.2."),
    ("6.0 (CUDA 12.2)", "3.10", "tensorrt", "12.2."),
    ("6.1/6.2 (CUDA 12.6)", "3.10", "jetpack61", "12.6."),
    ("7.x (CUDA 13)", "3.12", "jetpack7", "13.0."),
    ("7.x (CUDA 13)", "3.12", "tensorrt", "13.0."),
]
DEVICE_SIDE = ("numpy", "onnxruntime", "opencv-python-headless", "tqdm", "onnx")


def requirements(wheel: Path, python: str, extra: str) -> list[str]:
    """The wheel's Requires-Dist that apply on aarch64 Linux, Python ``python``, with ``extra``."""
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(zf.read(name).decode("utf-8"))
    if python + ".0" not in SpecifierSet(meta.get("Requires-Python", "")):
        raise SystemExit(f"FAILED: edgevit requires Python {meta.get('Requires-Python')}, not {python}")
    env = {
        "python_version": python,
        "python_full_version": python + ".0",
        "platform_machine": "aarch64",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
    }
    out = []
    for text in meta.get_all("Requires-Dist") or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({**env, "extra": extra}):
            if req.name == "edgevit":  # a self-reference (edgevit[x]) is not used by the device extras
                continue
            req.marker = None
            out.append(str(req))
    return out


def resolve(wheel: Path, python: str, extra: str) -> dict[str, str]:
    reqs = requirements(wheel, python, extra)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed"]
        cmd += ["--only-binary=:all:", "--python-version", python, "--target", str(Path(tmp) / "t")]
        for p in PLATFORMS:
            cmd += ["--platform", p]
        cmd += ["--report", str(report), *reqs]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"FAILED: Python {python} [{extra}] does not resolve:\n{proc.stderr.strip()}")
        data = json.loads(report.read_text())
    return {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in data["install"]}


def main() -> int:
    wheel = Path(sys.argv[1])
    bad = 0
    for jetpack, python, extra, want in CASES:
        got = resolve(wheel, python, extra)
        cuda = got.get("cuda-python", "")
        missing = [d for d in DEVICE_SIDE if d not in got]
        ok = cuda.startswith(want) and not missing
        bad += not ok
        print(
            f"{'ok  ' if ok else 'FAIL'} JetPack {jetpack}, Python {python}, [{extra}]: cuda-python {cuda or 'none'} "
            f"(want {want}x); " + ", ".join(f"{d} {got.get(d, 'MISSING')}" for d in DEVICE_SIDE)
        )
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
