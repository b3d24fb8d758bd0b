"""TensorRT engines: ``edgevit build`` (ONNX -> plan + manifest) for TensorRT 8.5 to 11.x.

Importing this package never imports TensorRT; the build functions do, when called.

* :mod:`edgevit.engine.builder`: build modes per TensorRT version, the build itself, trtexec.
* :mod:`edgevit.engine.fp16`: FP16 ONNX conversion for strongly typed builds.
* :mod:`edgevit.engine.device`: GPU / Jetson detection and capability refusals.
* :mod:`edgevit.engine.manifest`: the manifest beside every engine, and its checks.
* :mod:`edgevit.engine.inspect`: layer precisions read back from the engine inspector.
* :mod:`edgevit.engine.calibrator`: the cache-only INT8 calibrator of the implicit path.
"""

from __future__ import annotations

from edgevit.engine.builder import BuildOptions, BuildResult, build_engine, parse_batch, print_trtexec
from edgevit.engine.manifest import Manifest, load_manifest, manifest_path

__all__ = [
    "BuildOptions",
    "BuildResult",
    "Manifest",
    "build_engine",
    "load_manifest",
    "manifest_path",
    "parse_batch",
    "print_trtexec",
]
