"""Post-training INT8 quantization: FP32 ONNX -> calibration table -> INT8 Q/DQ ONNX.

* :mod:`~edgevit.quant.quantize`: the stage (``edgevit quantize``), :func:`quantize_onnx`.
* :mod:`~edgevit.quant.config`: :class:`QuantizeConfig` and its defaults.
* :mod:`~edgevit.quant.calibrate`: the calibration pass and the range of every tensor.
* :mod:`~edgevit.quant.stats`: streaming statistics and every range method's bound.
* :mod:`~edgevit.quant.table`: the calibration table and the TensorRT calibration cache.
* :mod:`~edgevit.quant.smoothquant`, :mod:`~edgevit.quant.bias_correction`: offline edits.
* :mod:`~edgevit.quant.probe`, :mod:`~edgevit.quant.sensitivity`: simulated INT8 and the
  searches on it (``--method auto``, ``--budget``).
* :mod:`~edgevit.quant.writer`: the Q/DQ model, written by ONNX Runtime's QDQ quantizer.
* :mod:`~edgevit.quant.rules`: TensorRT's Q/DQ rules, checked node by node.
* :mod:`~edgevit.quant.graph`: ONNX graph helpers (the weight-axis rule among them).

Importing the package imports neither onnx nor onnxruntime.
"""

from __future__ import annotations
