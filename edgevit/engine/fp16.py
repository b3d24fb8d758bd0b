"""Convert an ONNX model's floating-point parts to FP16 for strongly typed TensorRT builds.

TensorRT 10.12+ (and 11.x, where it is the only mode) takes every tensor's precision from
the graph, so an FP16 engine needs an FP16 ONNX. The conversion:

* keeps the model's inputs and outputs FP32 (a Cast at each end), so callers and the
  manifest do not change;
* keeps ``LayerNormalization`` and ``Softmax`` (by default) in FP32, with Casts around them:
  the ViT residual stream carries outliers whose squares overflow FP16 in a LayerNorm;
* converts float initializers, ``Constant`` values and ``Cast``-to-float targets;
* in a Q/DQ model converts the quantization scales too, so DequantizeLinear produces FP16
  (the unquantized parts of an INT8 model then run in FP16); FP16 scales need opset 19,
  so the default-domain opset is raised to 19 when Q/DQ nodes are present;
* refuses when a weight, or a calibrated activation range of a tensor that becomes FP16,
  does not fit in FP16 (max 65504), naming the tensor.

Needs the ``onnx`` package (``pip install onnx``; it has aarch64 wheels for Jetsons).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgevit.artifacts import atomic_output
from edgevit.engine.options import DEFAULT_FP32_OPS
from edgevit.errors import ArtifactError, BackendError, QuantizationError

FP16_MAX = 65504.0
FP16_MIN_SUBNORMAL = 2.0**-24
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
QDQ_MIN_OPSET = 19  # QuantizeLinear/DequantizeLinear accept float16 scales from opset 19
CAST_SUFFIX_16 = "__fp16"
CAST_SUFFIX_32 = "__fp32"


@dataclass
class Fp16Report:
    """What the conversion did, for the manifest and the tests."""

    converted_initializers: int = 0
    kept_fp32_nodes: list[str] = field(default_factory=list)
    casts_added: int = 0
    opset: int = 0
    weight_absmax: float = 0.0
    weights_flushed_to_zero: int = 0  # nonzero values below FP16's smallest subnormal
    scales_subnormal: int = 0  # Q/DQ scales that lose precision in FP16
    fp16_tensors: list[str] = field(default_factory=list)
    range_checked: int = 0
    range_absmax: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["fp16_tensors"] = len(self.fp16_tensors)
        counts: dict[str, int] = {}
        for name in self.kept_fp32_nodes:
            op = name.rsplit("/", 1)[-1].split("_")[0]
            counts[op] = counts.get(op, 0) + 1
        d["kept_fp32_nodes"] = counts
        return d


def import_onnx() -> Any:
    try:
        import onnx

        return onnx
    except ImportError as exc:
        raise BackendError(
            f"the FP16 conversion needs the onnx package ({exc}); `pip install onnx`, or convert on the workstation"
        ) from exc


def convert_to_fp16(
    model: Any,
    fp32_ops: Iterable[str] = DEFAULT_FP32_OPS,
    ranges: Mapping[str, float] | None = None,
) -> tuple[Any, Fp16Report]:
    """Return an FP16 copy of ``model`` (an ``onnx.ModelProto``) and a report.

    Args:
        model: the FP32 or INT8 Q/DQ model.
        fp32_ops: op types kept in FP32.
        ranges: tensor name -> calibrated absolute max (from the calibration table); every
            tensor that becomes FP16 and has a range is checked against FP16's range.

    Raises:
        QuantizationError: a weight or a calibrated range does not fit FP16.
    """
    onnx = import_onnx()
    from onnx import TensorProto, helper, numpy_helper

    FLOAT, FLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    keep = set(fp32_ops)
    report = Fp16Report()

    if any(i.type.tensor_type.elem_type == FLOAT16 for i in g.input):
        raise ArtifactError("the model already has FP16 inputs; pass the FP32 or INT8 Q/DQ model to convert")

    consumers: dict[str, list[Any]] = {}
    for node in g.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    kept_nodes = [n for n in g.node if n.op_type in keep]
    report.kept_fp32_nodes = [n.name or n.op_type for n in kept_nodes]

    # 1. Initializers: FP16 unless only FP32 nodes read them; shared ones get an FP32 twin.
    twins: dict[str, str] = {}
    new_inits = []
    for init in g.initializer:
        if init.data_type != FLOAT:
            continue
        users = consumers.get(init.name, [])
        fp32_users = [u for u in users if u.op_type in keep]
        if users and len(fp32_users) == len(users):
            continue
        arr = numpy_helper.to_array(init)
        _check_weight(init.name, arr, report, is_scale=any(u.op_type in QDQ_OPS for u in users))
        if fp32_users:
            twin = numpy_helper.from_array(arr.astype(np.float32), init.name + CAST_SUFFIX_32)
            new_inits.append(twin)
            twins[init.name] = twin.name
        init.CopyFrom(numpy_helper.from_array(arr.astype(np.float16), init.name))
        report.converted_initializers += 1
    g.initializer.extend(new_inits)
    for node in kept_nodes:
        for i, name in enumerate(node.input):
            if name in twins:
                node.input[i] = twins[name]

    # 2. Constants, Cast targets, ConstantOfShape values (outside the FP32 nodes).
    for node in g.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == FLOAT:
                    users = consumers.get(node.output[0], [])
                    if users and all(u.op_type in keep for u in users):
                        continue
                    arr = numpy_helper.to_array(attr.t)
                    _check_weight(node.output[0], arr, report, is_scale=False)
                    attr.t.CopyFrom(numpy_helper.from_array(arr.astype(np.float16), attr.t.name))
                elif attr.name == "value_float":
                    raise ArtifactError(f"Constant {node.name} uses value_float; re-export with torch.onnx")
        elif node.op_type == "Cast":
            for attr in node.attribute:
                if attr.name == "to" and attr.i == FLOAT:
                    attr.i = FLOAT16
        elif node.op_type == "ConstantOfShape":
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == FLOAT:
                    arr = numpy_helper.to_array(attr.t)
                    attr.t.CopyFrom(numpy_helper.from_array(arr.astype(np.float16), attr.t.name))

    # 3. FP32 islands: Cast to FP32 before each FP32 node's activation inputs, back after.
    init_names = {i.name for i in g.initializer}
    new_nodes: list[Any] = []
    produced_fp32: set[str] = set()
    for node in g.node:
        if node.op_type in keep:
            for i, name in enumerate(node.input):
                if not name or name in init_names:
                    continue
                cast_out = f"{name}{CAST_SUFFIX_32}_{node.name or node.op_type}_{i}"
                new_nodes.append(helper.make_node("Cast", [name], [cast_out], name=cast_out, to=FLOAT))
                node.input[i] = cast_out
                report.casts_added += 1
            new_nodes.append(node)
            for i, name in enumerate(node.output):
                if not name:
                    continue
                inner = name + CAST_SUFFIX_32
                node.output[i] = inner
                produced_fp32.add(inner)
                new_nodes.append(helper.make_node("Cast", [inner], [name], name=f"{inner}_to_fp16", to=FLOAT16))
                report.casts_added += 1
        else:
            new_nodes.append(node)

    # 4. Graph inputs stay FP32: cast them once, right after the input.
    head: list[Any] = []
    for inp in g.input:
        if inp.type.tensor_type.elem_type != FLOAT or inp.name in init_names:
            continue
        casted = inp.name + CAST_SUFFIX_16
        for node in new_nodes:
            for i, name in enumerate(node.input):
                if name == inp.name:
                    node.input[i] = casted
        head.append(helper.make_node("Cast", [inp.name], [casted], name=casted, to=FLOAT16))
        report.casts_added += 1
    # 5. Graph outputs stay FP32: the producer writes an FP16 tensor, a Cast makes the output.
    tail: list[Any] = []
    for out in g.output:
        if out.type.tensor_type.elem_type != FLOAT:
            continue
        inner = out.name + CAST_SUFFIX_16
        for node in new_nodes:
            for i, name in enumerate(node.output):
                if name == out.name:
                    node.output[i] = inner
            for i, name in enumerate(node.input):
                if name == out.name:
                    node.input[i] = inner
        tail.append(helper.make_node("Cast", [inner], [out.name], name=out.name + "_to_fp32", to=FLOAT))
        report.casts_added += 1
    del g.node[:]
    g.node.extend(head + new_nodes + tail)
    del g.value_info[:]  # stale element types; TensorRT and ONNX Runtime infer them again

    # 6. Q/DQ with FP16 scales needs opset 19.
    has_qdq = any(n.op_type in QDQ_OPS for n in g.node)
    for op in m.opset_import:
        if op.domain in ("", "ai.onnx"):
            if has_qdq and op.version < QDQ_MIN_OPSET:
                op.version = QDQ_MIN_OPSET
            report.opset = int(op.version)

    # 7. Which activations are FP16 now, and do their calibrated ranges fit?
    graph_io = {i.name for i in g.input} | {o.name for o in g.output}
    fp16 = []
    for node in g.node:
        if node.op_type in keep or node.op_type == "QuantizeLinear":
            continue
        if node.op_type == "Cast" and any(a.name == "to" and a.i == FLOAT for a in node.attribute):
            continue
        fp16.extend(o for o in node.output if o and o not in graph_io and o not in produced_fp32)
    report.fp16_tensors = fp16
    if ranges:
        worst = ("", 0.0)
        for name in fp16:
            if name in ranges:
                v = abs(float(ranges[name]))
                report.range_checked += 1
                if v > worst[1]:
                    worst = (name, v)
        report.range_absmax = worst[1]
        if worst[1] > FP16_MAX:
            raise QuantizationError(
                f"calibrated range of tensor {worst[0]!r} reaches {worst[1]:.6g}, beyond FP16's {FP16_MAX:g}; "
                f"keep its producer in FP32 or build --precision int8/fp32 instead of fp16/best"
            )
    return m, report


def _check_weight(name: str, arr: np.ndarray, report: Fp16Report, is_scale: bool) -> None:
    if arr.size == 0:
        return
    if not np.isfinite(arr).all():
        raise QuantizationError(f"weight {name!r} contains NaN or Inf; retrain or re-export the model")
    absmax = float(np.abs(arr).max())
    report.weight_absmax = max(report.weight_absmax, absmax)
    if absmax > FP16_MAX:
        raise QuantizationError(
            f"weight {name!r} reaches {absmax:.6g}, beyond FP16's {FP16_MAX:g}; this model cannot be converted to FP16"
        )
    nz = np.abs(arr[arr != 0])
    flushed = int(np.count_nonzero(nz < FP16_MIN_SUBNORMAL))
    if is_scale:
        report.scales_subnormal += int(np.count_nonzero(nz < 2.0**-14))
        if flushed:
            raise QuantizationError(
                f"quantization scale {name!r} has values below FP16's smallest subnormal ({FP16_MIN_SUBNORMAL:.3g}); "
                "they would become 0: build --precision int8 (FP32 scales) instead of best"
            )
    else:
        report.weights_flushed_to_zero += flushed


def convert_file(
    src: str | Path,
    dst: str | Path,
    fp32_ops: Iterable[str] = DEFAULT_FP32_OPS,
    ranges: Mapping[str, float] | None = None,
) -> Fp16Report:
    """Convert ``src`` to FP16 and write it to ``dst`` atomically (metadata carried over)."""
    onnx = import_onnx()
    src = Path(src)
    try:
        model = onnx.load(str(src))
    except Exception as exc:
        raise ArtifactError(f"{src} is not a readable ONNX model ({exc}); re-export it") from exc
    out, report = convert_to_fp16(model, fp32_ops=fp32_ops, ranges=ranges)
    with atomic_output(dst) as tmp:
        onnx.save(out, str(tmp))
    return report
