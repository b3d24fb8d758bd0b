"""TensorRT basics shared by the runtime (running engines) and the builder (making them):
importing TensorRT across versions (:mod:`~edgevit.trt.trtapi`), cuda-python
(:mod:`~edgevit.trt.cudart`), the GPU or Jetson at hand (:mod:`~edgevit.trt.device`) and
the manifest beside every engine (:mod:`~edgevit.trt.manifest`).

A leaf of the package: it imports only edgevit's artifact layer, never the build code, so
a device that only runs engines loads none of it. Importing it never imports TensorRT.
"""

from __future__ import annotations
