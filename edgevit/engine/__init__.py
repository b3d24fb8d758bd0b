"""TensorRT engines: ``edgevit build`` (ONNX -> plan + manifest) for TensorRT 8.5 to 11.x.

The build side of TensorRT; what the runtime shares with it (importing TensorRT, CUDA,
the device, the manifest) is in :mod:`edgevit.trt`. Importing this package imports
nothing else; import the modules you need:

* :mod:`edgevit.engine.builder`: build modes per TensorRT version, the build itself, trtexec.
* :mod:`edgevit.engine.fp16`: FP16 ONNX conversion for strongly typed builds.
* :mod:`edgevit.engine.inspect`: layer precisions read back from the engine inspector.
* :mod:`edgevit.engine.calibrator`: the cache-only INT8 calibrator of the implicit path.
"""

from __future__ import annotations
