"""TensorRT's rules for explicit-quantization (Q/DQ) ONNX graphs, checked node by node.

From the onnx-tensorrt operator documentation and TensorRT's developer guide:

* only QuantizeLinear/DequantizeLinear carry quantization; ``QLinear*`` and ``*Integer``
  ops are not read;
* symmetric signed INT8: every zero point is an INT8 zero;
* only INT8 tensors enter a DequantizeLinear (an INT32 bias DQ is rejected);
* per-channel scales (opset >= 13, ``axis``) on weights, on the output-channel axis:
  Conv axis 0, Gemm axis 0 with ``transB=1`` (1 otherwise), MatMul with a constant
  ``[K, N]`` weight axis 1; activations per tensor (scalar scale);
* edgevit's ViT policy on top: Q/DQ only on the inputs of MatMul/Gemm/Conv (never on
  their outputs, biases, LayerNorm, Softmax, GELU or the residual Adds).

:func:`check_qdq_graph` returns every violation as a sentence naming the node.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from edgevit.quant.graph import WEIGHTED_OPS, int_attr, opset, weight_axis

FORBIDDEN_OPS = ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QGemm", "QLinearAdd")


def check_qdq_graph(model) -> list[str]:  # model: onnx.ModelProto
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    problems: list[str] = []
    version = opset(model)
    if version < 13:
        problems.append(f"opset {version} < 13: per-channel Q/DQ needs opset 13 or newer")
    inits = {t.name: t for t in graph.initializer}
    producer = {out: n for n in graph.node for out in n.output}
    consumers: dict[str, list] = defaultdict(list)
    for n in graph.node:
        for i, name in enumerate(n.input):
            consumers[name].append((n, i))

    def const_array(name: str) -> np.ndarray | None:
        if name in inits:
            return numpy_helper.to_array(inits[name])
        node = producer.get(name)
        if node is not None and node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
        return None

    for n in graph.node:
        label = f"{n.op_type} {n.name!r}"
        if n.domain not in ("", "ai.onnx"):
            problems.append(f"{label}: custom domain {n.domain!r} is not a standard ONNX op")
        if n.op_type in FORBIDDEN_OPS:
            problems.append(f"{label}: TensorRT reads only the Q/DQ form, not {n.op_type}")
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if len(n.input) < 3 or not n.input[2]:
            problems.append(f"{label}: no zero point; TensorRT needs an explicit INT8 zero point of 0")
        else:
            zp = const_array(n.input[2])
            if zp is None:
                problems.append(f"{label}: zero point is not a constant")
            else:
                if zp.dtype != np.int8:
                    problems.append(f"{label}: zero point is {zp.dtype}, TensorRT needs signed INT8")
                if np.any(zp != 0):
                    problems.append(f"{label}: nonzero zero point; TensorRT supports symmetric quantization only")
        scale = const_array(n.input[1])
        if scale is None:
            problems.append(f"{label}: scale is not a constant")
            continue
        if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            problems.append(f"{label}: scale must be finite and positive")
        if n.op_type == "QuantizeLinear":
            src = producer.get(n.input[0])
            if src is not None and src.op_type in WEIGHTED_OPS:
                problems.append(f"{label}: quantizes the output of {src.op_type} {src.name!r}; Q/DQ go on inputs only")
            if scale.size != 1:
                problems.append(f"{label}: activation scale must be per tensor, got {scale.size} values")
            continue
        # DequantizeLinear
        x = n.input[0]
        x_const = const_array(x)
        if x_const is not None:
            if x_const.dtype != np.int8:
                problems.append(
                    f"{label}: dequantizes a {x_const.dtype} tensor; only INT8 may enter a DequantizeLinear"
                )
        else:
            src = producer.get(x)
            if src is None or src.op_type != "QuantizeLinear":
                problems.append(f"{label}: input does not come from a QuantizeLinear or an INT8 weight")
            elif len(src.input) >= 3 and src.input[2] in inits and inits[src.input[2]].data_type != TensorProto.INT8:
                problems.append(f"{label}: fed by a non-INT8 QuantizeLinear")
        for consumer, idx in consumers.get(n.output[0], []):
            clabel = f"{consumer.op_type} {consumer.name!r}"
            if consumer.op_type not in WEIGHTED_OPS:
                problems.append(f"{label}: feeds {clabel}; Q/DQ belong only on MatMul/Gemm/Conv inputs")
                continue
            if idx >= 2:
                problems.append(f"{label}: feeds the bias of {clabel}; biases stay in floating point")
                continue
            if x_const is not None:  # a weight: per channel on the output-channel axis
                want_axis = weight_axis(consumer, x_const.ndim)
                channels = x_const.shape[want_axis]
                if idx != 1:
                    problems.append(f"{label}: a constant weight enters {clabel} as input {idx}, expected input 1")
                elif scale.size == 1:
                    problems.append(f"{label}: weight of {clabel} is quantized per tensor; use per-channel scales")
                else:
                    axis = int_attr(n, "axis", 1)
                    if axis < 0:
                        axis += x_const.ndim
                    if axis != want_axis or scale.size != channels:
                        problems.append(
                            f"{label}: weight of {clabel} quantized on axis {axis} with {scale.size} scales; "
                            f"expected axis {want_axis} with {channels}"
                        )
            elif scale.size != 1:
                problems.append(f"{label}: activation input of {clabel} must be per tensor")
    return problems


def summarize_qdq(model) -> dict[str, int]:
    """Counts that describe a Q/DQ graph: weighted ops, how many are quantized, Q/DQ nodes."""
    graph = model.graph
    producer = {out: n for n in graph.node for out in n.output}
    weighted = [n for n in graph.node if n.op_type in WEIGHTED_OPS]
    quantized = [
        n
        for n in weighted
        if any(producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in n.input[:2])
    ]
    return {
        "weighted_ops": len(weighted),
        "quantized_ops": len(quantized),
        "quantize_nodes": sum(n.op_type == "QuantizeLinear" for n in graph.node),
        "dequantize_nodes": sum(n.op_type == "DequantizeLinear" for n in graph.node),
    }
