"""Write the INT8 Q/DQ model: ONNX Runtime's QDQ quantizer, driven by edgevit's ranges and
its ViT/TensorRT policy (:data:`POLICY`), checked against TensorRT's rules before it is saved.

ONNX Runtime's ``QDQQuantizer`` is not part of its public API (``quantize_static`` is, but it
calibrates itself). Its constructor changed between releases (1.16 took ``mode`` and
``static``; later ones do not), so it is called with keywords matched against its own
signature, and a signature this module does not know is a clear error, never arguments
bound to the wrong parameters.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgevit.artifacts import ArtifactInfo, atomic_output, set_onnx_metadata
from edgevit.errors import QuantizationError
from edgevit.quant.calibrate import float_nodes, prepare_model
from edgevit.quant.config import QuantizeConfig
from edgevit.quant.graph import WEIGHTED_OPS
from edgevit.quant.rules import check_qdq_graph, summarize_qdq
from edgevit.quant.table import CalibrationTable

# edgevit's Q/DQ policy as ONNX Runtime quantizer options (``extra_options``): symmetric
# INT8 everywhere, float biases, nothing on the weighted ops' outputs, [K, N] MatMul
# weights per output channel. The benchmark's placement variants start from this too.
POLICY: dict[str, Any] = {
    "ActivationSymmetric": True,
    "WeightSymmetric": True,
    "QuantizeBias": False,  # TensorRT rejects INT32 bias DequantizeLinear
    "OpTypesToExcludeOutputQuantization": list(WEIGHTED_OPS),  # no Q/DQ on matmul outputs
    "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},  # [K, N] weights: output channel is axis 1
}


@contextlib.contextmanager
def quiet_ort_quantizer() -> Iterator[None]:
    """ONNX Runtime's quantizer logs warnings on the root logger; library code stays silent."""
    logger = logging.getLogger("root")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)


def make_qdq_quantizer(model: Any, ranges: Any, nodes_to_exclude: list[str], op_types: list[str]) -> Any:
    """ONNX Runtime's ``QDQQuantizer`` for ``model`` with edgevit's policy, built with keywords."""
    import onnxruntime
    from onnxruntime.quantization import qdq_quantizer, quant_utils

    cls = qdq_quantizer.QDQQuantizer
    kwargs: dict[str, Any] = {
        "model": model,
        "per_channel": True,
        "reduce_range": False,
        "weight_qType": quant_utils.QuantType.QInt8,
        "activation_qType": quant_utils.QuantType.QInt8,
        "tensors_range": ranges,
        "nodes_to_quantize": [],  # every node of op_types
        "nodes_to_exclude": nodes_to_exclude,
        "op_types_to_quantize": op_types,
        "extra_options": dict(POLICY),
    }
    params = inspect.signature(cls.__init__).parameters
    if "mode" in params:  # onnxruntime <= 1.16
        kwargs["mode"] = quant_utils.QuantizationMode.QLinearOps
    if "static" in params:
        kwargs["static"] = True
    missing = [
        n
        for n, p in params.items()
        if n != "self" and p.default is inspect.Parameter.empty and p.kind is not p.VAR_KEYWORD and n not in kwargs
    ]
    unknown = [n for n in kwargs if n not in params]
    if missing or unknown:
        raise QuantizationError(
            f"onnxruntime {onnxruntime.__version__}'s QDQQuantizer takes {list(params)[1:]}, which edgevit does not "
            f"know (missing {missing}, unknown {unknown}); install the onnxruntime version edgevit's [train] extra asks for"
        )
    return cls(**kwargs)


def keep_float_consumers(model: Any) -> int:
    """Give every consumer of a quantized activation other than a MatMul/Gemm/Conv data input
    the float tensor back (in place); drop Q/DQ pairs left unused. Returns how many inputs
    were re-pointed.

    ONNX Runtime's quantizer replaces a tensor by its DequantizeLinear output in *every*
    consumer. In graphs exported from timm or Hugging Face a quantized tensor (the input
    image, a LayerNorm output) also feeds ``Shape`` nodes and the like; TensorRT wants Q/DQ
    only where the weighted op reads. The float tensor is what those consumers read before
    quantization, so the graph's function outside the weighted ops is unchanged.
    """
    graph = model.graph
    prod = {o: n for n in graph.node for o in n.output}
    float_of: dict[str, str] = {}  # DQ output -> the float tensor its Q quantizes
    for n in graph.node:
        if n.op_type == "DequantizeLinear":
            q = prod.get(n.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                float_of[n.output[0]] = q.input[0]
    moved = 0
    for n in graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for i, name in enumerate(n.input):
            if name in float_of and not (n.op_type in WEIGHTED_OPS and i < 2):
                n.input[i] = float_of[name]
                moved += 1
    for out in graph.output:
        if out.name in float_of:  # never expected: a graph output is not quantized by our policy
            raise QuantizationError(f"graph output {out.name!r} was quantized; report it with the model")
    # drop Q/DQ nodes nothing reads any more (a tensor that only fed a Shape)
    while True:
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [
            n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.output[0] not in used
        ]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    return moved


def quantize_model(
    model_path: str | Path, table: CalibrationTable, out_path: str | Path, info: ArtifactInfo, cfg: QuantizeConfig
) -> dict[str, int]:
    """Write the INT8 Q/DQ model of ``model_path`` with the ranges of ``table``."""
    import onnx
    from onnxruntime.quantization import calibrate as ort_calibrate
    from onnxruntime.quantization import quant_utils

    model = quant_utils.load_model_with_shape_infer(Path(model_path))
    applied = prepare_model(model, table.transforms)
    node_names = {n.name for n in model.graph.node}
    unknown = [n for n in table.float_layers if n not in node_names]
    if unknown:
        raise QuantizationError(f"the calibration table keeps unknown layer {unknown[0]!r} in float; recalibrate")
    ranges = ort_calibrate.TensorsData(
        ort_calibrate.CalibrationMethod.MinMax,
        {name: (np.float32(-r.amax), np.float32(r.amax)) for name, r in table.tensors.items() if r.quantized},
    )
    with quiet_ort_quantizer():
        exclude = list(table.float_layers) + float_nodes(model, table.settings)
        quantizer = make_qdq_quantizer(model, ranges, exclude, list(cfg.op_types))
        quantizer.quantize_model()
    quantizer.model.topological_sort()
    qmodel = quantizer.model.model
    rerouted = keep_float_consumers(qmodel)
    problems = check_qdq_graph(qmodel)
    if problems:
        raise QuantizationError(
            f"the quantized graph breaks TensorRT's Q/DQ rules: {problems[0]} (+{len(problems) - 1} more)"
        )
    info.precision = "int8"
    info.source_sha256 = table.model_sha256
    summary = summarize_qdq(qmodel)
    info.extra["quantization"] = {
        "format": "QDQ",
        "weights": "int8 symmetric per-channel",
        "activations": "int8 symmetric per-tensor",
        "method": table.method,
        "num_images": table.num_images,
        "image_source": table.image_source,
        "settings": table.settings,
        "transforms": applied,
        "float_layers": list(table.float_layers),
        "tensor_methods": table.method_counts(),
        "float_consumers_rerouted": rerouted,
        **summary,
    }
    if "smoothquant" in table.transforms:
        # the tensors of the smoothed LayerNorm outputs are y / s: record s so tools comparing
        # with the FP32 model (edgevit inspect) can undo it
        info.extra["quantization"]["smoothquant"] = table.transforms["smoothquant"]
    set_onnx_metadata(qmodel, info)
    qmodel.producer_name = "edgevit"
    onnx.checker.check_model(qmodel)
    with atomic_output(out_path) as tmp:
        onnx.save_model(qmodel, str(tmp))
    return summary
