"""``edgevit import``: a model made elsewhere becomes an edgevit FP32 artifact.

* :mod:`~edgevit.importer.core`: :func:`import_model` (weights or ONNX in, an ONNX artifact
  with edgevit's metadata out, plus a checkpoint for fine-tuning when weights came in).
* :mod:`~edgevit.importer.onnx_source`: checking, normalizing and simplifying a foreign
  ONNX classifier, proved to compute what the original computes.
* :mod:`~edgevit.importer.cli`: the command.

Importing the package imports neither torch nor onnx.
"""

from __future__ import annotations
