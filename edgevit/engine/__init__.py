"""TensorRT engines: ``edgevit build`` (ONNX -> engine + manifest) for TensorRT 8.5 to 11.x.

The build side of TensorRT; what the runtime shares with it (importing TensorRT, CUDA,
the device, the manifest) is in :mod:`edgevit.trt`. Importing this package imports
nothing else; import the modules you need, one job each:

* :mod:`edgevit.engine.options`: what a build is asked to do (``BuildOptions``).
* :mod:`edgevit.engine.modes`: the build mode per TensorRT version (``BuildSetup``).
* :mod:`edgevit.engine.paths`: every file a build and its trtexec line use, resolved once.
* :mod:`edgevit.engine.prepare`: the ONNX TensorRT parses (source, FP16 conversion, LayerNorm decomposed).
* :mod:`edgevit.engine.decompose`: LayerNormalization in primitive ops for TensorRT < 8.6.
* :mod:`edgevit.engine.fp16`: FP16 ONNX conversion for strongly typed builds.
* :mod:`edgevit.engine.network`: TensorRT network, builder config, FP32 pins, DLA candidates.
* :mod:`edgevit.engine.build`: the build itself (``build_engine``) and the manifest.
* :mod:`edgevit.engine.trtexec`: the equivalent trtexec command per TensorRT version.
* :mod:`edgevit.engine.inspect`: layer precisions and DLA placement read back from the engine.
* :mod:`edgevit.engine.calibrator`: the cache-only INT8 calibrator of the implicit path.
* :mod:`edgevit.engine.opcheck`: which TensorRT versions can parse an ONNX (onnx-tensorrt's tables).
"""

from __future__ import annotations
