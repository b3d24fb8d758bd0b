"""LayerNormalization decomposed into primitive ONNX ops, for TensorRT older than 8.6.

onnx-tensorrt 8.5-GA (TensorRT 8.5, JetPack 5) has no LayerNormalization importer
(``docs/operators.md``: N), so every opset-17 edgevit export fails to parse there. Each
``LayerNormalization(X, scale, B, axis, epsilon)`` becomes the graph PyTorch exported before
opset 17, which TensorRT 8.x parses (and fuses) as a LayerNorm::

    mean = ReduceMean(X, axes)          d   = Sub(X, mean)
    var  = ReduceMean(Pow(d, 2), axes)  std = Sqrt(Add(var, epsilon))
    Y    = Add(Mul(Div(d, std), scale), B)

Every op is in onnx-tensorrt 8.5's table (ReduceMean, Sub, Pow, Add, Sqrt, Div, Mul: Y). The
opset is kept (17: ReduceMean takes ``axes`` as an attribute; from opset 18 as an input, which
is handled too). Q/DQ nodes are not touched: they sit only on MatMul/Gemm/Conv inputs, so
their placement and scales stay exactly as ``edgevit quantize`` wrote them.

Every node and tensor made here carries :data:`MARK` in its name, so the builder can pin these
layers to FP32 in builder-flags mode (an FP16 ``Pow`` of the residual stream overflows).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgevit.errors import ArtifactError

MARK = "/ln_decomposed/"


def is_decomposed(name: str) -> bool:
    """True for a node, tensor or TensorRT layer named by :func:`decompose_layernorm`."""
    return MARK in name


def _opset(model: Any) -> int:
    for op in model.opset_import:
        if op.domain in ("", "ai.onnx"):
            return int(op.version)
    return 0


def _rank(model: Any, name: str) -> int | None:
    """The rank of tensor ``name`` from the graph's declared or inferred types, if known."""
    import onnx

    def find(graph: Any) -> int | None:
        for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
            if vi.name == name and vi.type.tensor_type.HasField("shape"):
                return len(vi.type.tensor_type.shape.dim)
        return None

    rank = find(model.graph)
    if rank is None:
        try:
            rank = find(onnx.shape_inference.infer_shapes(model).graph)
        except Exception:  # shape inference is best effort here
            rank = None
    return rank


def decompose_layernorm(model: Any) -> tuple[Any, int]:
    """Return a copy of ``model`` (an ``onnx.ModelProto``) without LayerNormalization nodes,
    and how many were decomposed.

    Raises:
        ArtifactError: a LayerNormalization uses its optional Mean/InvStdDev outputs, or a
            positive ``axis`` whose input rank cannot be inferred.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    opset = _opset(m)
    new_nodes = []
    new_inits = []
    count = 0
    bases: set[str] = set()
    for index, node in enumerate(g.node):
        if node.op_type != "LayerNormalization" or node.domain not in ("", "ai.onnx"):
            new_nodes.append(node)
            continue
        if len(node.output) > 1 and any(node.output[1:]):
            raise ArtifactError(
                f"LayerNormalization {node.name!r} uses its Mean/InvStdDev outputs; edgevit can only decompose "
                "the plain Y output (re-export the model)"
            )
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        axis = int(attrs.get("axis", -1))
        eps = float(attrs.get("epsilon", 1e-5))
        if int(attrs.get("stash_type", 1)) != TensorProto.FLOAT:
            raise ArtifactError(f"LayerNormalization {node.name!r} has stash_type != float; cannot decompose it")
        x = node.input[0]
        if axis < 0:
            axes = list(range(axis, 0))
        else:
            rank = _rank(m, x)
            if rank is None:
                raise ArtifactError(
                    f"LayerNormalization {node.name!r} has axis {axis} and the rank of {x!r} is unknown; "
                    "re-export with axis=-1"
                )
            axes = list(range(axis - rank, 0))
        base = node.name or f"LayerNormalization_{index}"
        if base in bases:  # node names should be unique; tensor names made from them must be
            base = f"{base}_{index}"
        bases.add(base)
        p = base + MARK

        def t(name: str, p: str = p) -> str:
            return p + name

        axes_input = ""
        if opset >= 18:  # ReduceMean takes axes as an input from opset 18 (an attribute before)
            axes_input = t("axes")
            new_inits.append(numpy_helper.from_array(np.asarray(axes, np.int64), axes_input))
        new_inits += [
            numpy_helper.from_array(np.asarray(2.0, np.float32), t("two")),
            numpy_helper.from_array(np.asarray(eps, np.float32), t("epsilon")),
        ]
        y = node.output[0]
        nodes = [
            _reduce_mean(x, t("mean"), t("ReduceMean_mean"), axes, axes_input),
            helper.make_node("Sub", [x, t("mean")], [t("centered")], name=t("Sub")),
            helper.make_node("Pow", [t("centered"), t("two")], [t("squared")], name=t("Pow")),
            _reduce_mean(t("squared"), t("variance"), t("ReduceMean_variance"), axes, axes_input),
            helper.make_node("Add", [t("variance"), t("epsilon")], [t("variance_eps")], name=t("Add_epsilon")),
            helper.make_node("Sqrt", [t("variance_eps")], [t("std")], name=t("Sqrt")),
            helper.make_node("Div", [t("centered"), t("std")], [t("normalized")], name=t("Div")),
        ]
        scale = node.input[1]
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else ""
        if bias:
            nodes.append(helper.make_node("Mul", [t("normalized"), scale], [t("scaled")], name=t("Mul_scale")))
            nodes.append(helper.make_node("Add", [t("scaled"), bias], [y], name=t("Add_bias")))
        else:
            nodes.append(helper.make_node("Mul", [t("normalized"), scale], [y], name=t("Mul_scale")))
        new_nodes.extend(nodes)
        count += 1
    if count:
        del g.node[:]
        g.node.extend(new_nodes)
        g.initializer.extend(new_inits)
    return m, count


def _reduce_mean(src: str, dst: str, name: str, axes: list[int], axes_input: str) -> Any:
    from onnx import helper

    if axes_input:
        return helper.make_node("ReduceMean", [src, axes_input], [dst], name=name, keepdims=1)
    return helper.make_node("ReduceMean", [src], [dst], name=name, axes=axes, keepdims=1)
