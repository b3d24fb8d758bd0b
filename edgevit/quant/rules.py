"""TensorRT's rules for explicit-quantization (Q/DQ) ONNX graphs, and edgevit's placement
policy on top, checked node by node.

TensorRT's rules (onnx-tensorrt's operator documentation, TensorRT's developer guide): a graph
that breaks one of these is refused by TensorRT's parser or builder.

* only QuantizeLinear/DequantizeLinear carry quantization; ``QLinear*`` and ``*Integer``
  ops are not read; no custom domains;
* symmetric signed INT8: every zero point is an INT8 zero, given explicitly;
* scales are constant, finite and positive; only INT8 tensors enter a DequantizeLinear (an
  INT32 bias DQ is rejected); a DequantizeLinear reads a QuantizeLinear or an INT8 constant;
* per-channel scales (opset >= 13, ``axis``) only on weights, on the output-channel axis:
  Conv axis 0, Gemm axis 0 with ``transB=1`` (1 otherwise), MatMul with a constant
  ``[K, N]`` weight axis 1; activations per tensor (scalar scale). A weight may be stored
  INT8 (``DQ(int8 weight)``) or FP32 behind its own pair (``DQ(Q(fp32 weight))``).

edgevit's policy (what its quantizer writes; TensorRT would accept other placements): Q/DQ
only on the inputs of MatMul/Gemm/Conv (never on their outputs, biases, LayerNorm, Softmax,
GELU, the residual Adds, reshapes or shape computations), weights per output channel and
stored as INT8.

:func:`check_qdq` sorts every finding into one of the two; :func:`check_qdq_graph` returns
both as sentences naming the node (what the quantizer and ``edgevit build`` refuse).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgevit.quant.graph import WEIGHTED_OPS, int_attr, opset, weight_axis

FORBIDDEN_OPS = ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QGemm", "QLinearAdd")


@dataclass
class QdqCheck:
    """Findings of :func:`check_qdq`: what TensorRT refuses, and what only edgevit's policy does."""

    tensorrt: list[str] = field(default_factory=list)
    policy: list[str] = field(default_factory=list)

    @property
    def all(self) -> list[str]:
        return self.tensorrt + self.policy


def check_qdq_graph(model: Any) -> list[str]:
    """Every violation of TensorRT's rules and of edgevit's policy, as sentences."""
    return check_qdq(model).all


def check_qdq(model: Any) -> QdqCheck:  # model: onnx.ModelProto
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    found = QdqCheck()
    trt, policy = found.tensorrt.append, found.policy.append
    version = opset(model)
    if version < 13:
        trt(f"opset {version} < 13: per-channel Q/DQ needs opset 13 or newer")
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
            trt(f"{label}: custom domain {n.domain!r} is not a standard ONNX op")
        if n.op_type in FORBIDDEN_OPS:
            trt(f"{label}: TensorRT reads only the Q/DQ form, not {n.op_type}")
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if len(n.input) < 3 or not n.input[2]:
            trt(f"{label}: no zero point; TensorRT needs an explicit INT8 zero point of 0")
        else:
            zp = const_array(n.input[2])
            if zp is None:
                trt(f"{label}: zero point is not a constant")
            else:
                if zp.dtype != np.int8:
                    trt(f"{label}: zero point is {zp.dtype}, TensorRT needs signed INT8")
                if np.any(zp != 0):
                    trt(f"{label}: nonzero zero point; TensorRT supports symmetric quantization only")
        scale = const_array(n.input[1])
        if scale is None:
            trt(f"{label}: scale is not a constant")
            continue
        if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            trt(f"{label}: scale must be finite and positive")
        if n.op_type == "QuantizeLinear":
            src = producer.get(n.input[0])
            if src is not None and src.op_type in WEIGHTED_OPS:
                policy(f"{label}: quantizes the output of {src.op_type} {src.name!r}; Q/DQ go on inputs only")
            if scale.size != 1 and const_array(n.input[0]) is None:
                trt(f"{label}: activation scale must be per tensor, got {scale.size} values")
            continue
        # DequantizeLinear: what it reads
        x = n.input[0]
        x_const = const_array(x)
        weight = x_const  # the weight this DQ gives its consumers (INT8, or FP32 behind a Q)
        if x_const is not None:
            if x_const.dtype != np.int8:
                trt(f"{label}: dequantizes a {x_const.dtype} tensor; only INT8 may enter a DequantizeLinear")
        else:
            src = producer.get(x)
            if src is None or src.op_type != "QuantizeLinear":
                trt(f"{label}: input does not come from a QuantizeLinear or an INT8 weight")
            else:
                if len(src.input) >= 3 and src.input[2] in inits and inits[src.input[2]].data_type != TensorProto.INT8:
                    trt(f"{label}: fed by a non-INT8 QuantizeLinear")
                weight = const_array(src.input[0])
                if weight is not None:
                    policy(
                        f"{label}: weight {src.input[0]!r} is stored in FP32 behind Q/DQ; edgevit stores INT8 weights"
                    )
        for consumer, idx in consumers.get(n.output[0], []):
            clabel = f"{consumer.op_type} {consumer.name!r}"
            if consumer.op_type not in WEIGHTED_OPS:
                policy(f"{label}: feeds {clabel}; Q/DQ belong only on MatMul/Gemm/Conv inputs")
                continue
            if idx >= 2:
                policy(f"{label}: feeds the bias of {clabel}; biases stay in floating point")
                continue
            if weight is not None:  # a weight: per channel on the output-channel axis
                if idx != 1:
                    policy(f"{label}: a constant weight enters {clabel} as input {idx}, expected input 1")
                elif scale.size == 1:
                    policy(f"{label}: weight of {clabel} is quantized per tensor; use per-channel scales")
                else:
                    want_axis = weight_axis(consumer, weight.ndim)
                    channels = weight.shape[want_axis]
                    axis = int_attr(n, "axis", 1)
                    if axis < 0:
                        axis += weight.ndim
                    if axis != want_axis or scale.size != channels:
                        trt(
                            f"{label}: weight of {clabel} quantized on axis {axis} with {scale.size} scales; "
                            f"expected axis {want_axis} with {channels}"
                        )
            elif scale.size != 1:
                trt(f"{label}: activation input of {clabel} must be per tensor")
    return found


def summarize_qdq(model: Any) -> dict[str, int]:
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
