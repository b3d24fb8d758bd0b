"""Small helpers over ``onnx.ModelProto`` graphs shared by the quantizer's passes.

The one rule for the output-channel axis of a weight lives here (:func:`weight_axis`), and
so does the symmetric per-channel INT8 round trip of a weight (:func:`weight_fake_quant`):
the Q/DQ writer, the rule checker, the fake-quantization probe, bias correction and the
per-layer report all ask these two functions rather than deciding on their own.

No torch and no onnxruntime: only numpy and (lazily) ``onnx.numpy_helper``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

WEIGHTED_OPS = ("MatMul", "Gemm", "Conv")  # the ops that get Q/DQ on their inputs (TensorRT policy)
INT8_MAX = 127.0


def initializers(model: Any) -> dict[str, Any]:
    """Initializer name -> TensorProto."""
    return {t.name: t for t in model.graph.initializer}


def to_array(tensor: Any) -> np.ndarray:
    from onnx import numpy_helper

    return numpy_helper.to_array(tensor)


def store(init: Any, value: np.ndarray) -> None:
    """Overwrite an initializer with ``value`` in its own dtype."""
    from onnx import numpy_helper

    init.CopyFrom(numpy_helper.from_array(value.astype(to_array(init).dtype), init.name))


def use_counts(model: Any) -> dict[str, int]:
    """Tensor name -> how many node inputs read it."""
    counts: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            counts[i] = counts.get(i, 0) + 1
    return counts


def consumers(model: Any) -> dict[str, list[Any]]:
    """Tensor name -> the nodes that read it, in graph order."""
    out: dict[str, list[Any]] = {}
    for n in model.graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def producers(model: Any) -> dict[str, Any]:
    """Tensor name -> the node that writes it."""
    return {o: n for n in model.graph.node for o in n.output}


def int_attr(node: Any, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(a.i)
    return default


def weight_axis(node: Any, ndim: int) -> int:
    """The output-channel axis of the weight (input 1) of a MatMul/Gemm/Conv node.

    Conv ``[out, in, kh, kw]``: 0; Gemm: 0 with ``transB=1`` (a PyTorch Linear), else 1;
    MatMul with a ``[K, N]`` weight: the last axis.
    """
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        return 0 if int_attr(node, "transB", 0) else 1
    return ndim - 1


def linear_weight(model: Any, node: Any, inits: dict[str, Any] | None = None) -> tuple[str, int, bool] | None:
    """(weight initializer, output-channel axis, weight is ``[N, K]``) of a MatMul/Gemm whose
    input 1 is a constant 2-D weight, or None."""
    inits = initializers(model) if inits is None else inits
    if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2 or node.input[1] not in inits:
        return None
    ndim = len(inits[node.input[1]].dims)
    if ndim != 2:
        return None
    axis = weight_axis(node, ndim)
    return node.input[1], axis, node.op_type == "Gemm" and axis == 0


def weight_fake_quant(w: np.ndarray, axis: int) -> np.ndarray:
    """Symmetric per-channel INT8 round trip of a weight, as ONNX Runtime's QDQ quantizer
    computes it (scale ``amax / 127`` per output channel, round half to even, clip)."""
    w = w.astype(np.float32)
    red = tuple(i for i in range(w.ndim) if i != axis % w.ndim)
    amax = np.abs(w).max(axis=red, keepdims=True)
    scale = np.where(amax > 0, amax / INT8_MAX, 1.0).astype(np.float32)
    return (np.clip(np.rint(w / scale), -INT8_MAX, INT8_MAX) * scale).astype(np.float32)


def opset(model: Any) -> int:
    """The default-domain opset of ``model``."""
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def attention_matmuls(model: Any) -> list[str]:
    """Names of the MatMul nodes whose two inputs are both activations: a transformer's
    attention batch matmuls (``Q @ K^T`` and ``softmax @ V``). A weight counts as constant
    also behind its Q/DQ nodes (in a quantized model)."""
    constant = set(initializers(model)) | {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    for n in model.graph.node:  # graph order: a DQ's input is known before the DQ
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.input[0] in constant:
            constant.add(n.output[0])
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and not any(i in constant for i in n.input[:2])]
