"""Serving edgevit models with NVIDIA Triton Inference Server.

Two halves, both behind the optional ``edgevit[serve]`` extra (``nvidia-pytriton`` and
``tritonclient``), imported only when used:

- :class:`~edgevit.serve.server.TritonModelServer` (``edgevit serve``): a real Triton server
  started in this process through PyTriton, serving any artifact :func:`edgevit.runtime.load`
  opens, with Triton's dynamic batcher, HTTP, gRPC and Prometheus metrics.
- :func:`~edgevit.serve.repository.export_triton` (``edgevit export-triton``): a Triton model
  repository (``config.pbtxt`` + ``1/model.plan`` or ``1/model.onnx`` + labels) for GPU
  servers and Jetsons that run Triton's own container. Every ``config.pbtxt`` is parsed
  against Triton's schema before it is written.

:class:`~edgevit.serve.core.InferenceCore` (the request handling) needs neither package.
"""

from __future__ import annotations

__all__ = ["SERVE_EXTRA_HINT"]

SERVE_EXTRA_HINT = "pip install 'edgevit[serve]'"
