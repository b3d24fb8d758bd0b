"""Every file a build reads or writes, resolved once for the build and for its trtexec line.

Both ``edgevit build`` and ``edgevit build --print-trtexec`` take their paths from
:func:`resolve_paths`, so the command printed names the files the build used:

* the engine and its manifest (``<engine>.json``);
* the ONNX TensorRT parses, when it is not the source: ``<engine stem>.fp16.onnx`` or
  ``<engine stem>.ln-decomposed.onnx`` beside the engine;
* implicit INT8: the calibration cache with its header retagged for the target TensorRT,
  ``<engine stem>.calib.cache`` beside the engine (TensorRT ignores a cache of another version);
* the timing cache: ``--timing-cache``, or ``<engines>/timing/trt<version>[-<gpu>-sm<cc>].cache``
  (the GPU part when the device is known: a timing cache belongs to one GPU).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from edgevit.engine.modes import BuildSetup
from edgevit.engine.options import BuildOptions
from edgevit.engine.prepare import prepared_suffix
from edgevit.trt.device import DeviceInfo
from edgevit.trt.manifest import manifest_path
from edgevit.trt.trtapi import TrtVersion


@dataclass(frozen=True)
class BuildPaths:
    engine: Path
    manifest: Path
    parse_onnx: Path  # the ONNX TensorRT parses: the source, or the prepared file beside the engine
    prepared: bool  # parse_onnx is written by the build (a rewrite of the source)
    calib_cache: Path | None  # implicit INT8 only
    timing_cache: Path | None  # None: no timing cache (--no-timing-cache, or TensorRT-RTX)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "gpu"


def default_output(opts: BuildOptions, precision: str) -> Path:
    """``<engines>/<model>.<precision>[.dla<N>].engine``."""
    dla = f".dla{opts.dla_core}" if opts.dla_core is not None else ""
    return opts.engines_dir / f"{opts.onnx.stem}.{precision}{dla}.engine"


def timing_cache_path(engines_dir: Path, version: TrtVersion, device: DeviceInfo | None) -> Path:
    """The default timing cache of ``version`` on ``device`` (None: a device not at hand)."""
    name = f"trt{version.text or '.'.join(map(str, version.tuple))}"
    if device is not None:
        name += f"-{_slug(device.gpu_name)}-sm{device.compute_capability}"
    return engines_dir / "timing" / f"{name}.cache"


def resolve_paths(opts: BuildOptions, setup: BuildSetup, version: TrtVersion, device: DeviceInfo | None) -> BuildPaths:
    """The one resolution of every path a build and its trtexec line use."""
    engine = opts.output or default_output(opts, setup.precision)
    suffix = prepared_suffix(setup)
    parse_onnx = engine.with_name(f"{engine.stem}{suffix}.onnx") if suffix else opts.onnx
    calib = engine.with_name(engine.stem + ".calib.cache") if setup.mode == "implicit-int8" else None
    timing = None
    if opts.use_timing_cache and not version.is_rtx:  # TensorRT-RTX: timing-cache calls are no-ops
        timing = opts.timing_cache or timing_cache_path(opts.engines_dir, version, device)
    return BuildPaths(engine, manifest_path(engine), parse_onnx, bool(suffix), calib, timing)
