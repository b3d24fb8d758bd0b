"""The ONNX a build hands to TensorRT's parser, made from the user's ONNX.

The source itself, or a rewrite of it written beside the engine: LayerNorm decomposed for
TensorRT < 8.6 (:mod:`edgevit.engine.decompose`) or the FP16 conversion of strongly typed
FP16/best builds (:mod:`edgevit.engine.fp16`). The build and the printed trtexec line read the
same prepared file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgevit.artifacts import ArtifactInfo, atomic_output, read_onnx_info
from edgevit.engine.modes import BuildSetup
from edgevit.engine.options import BuildOptions
from edgevit.errors import ArtifactError, QuantizationError, first_line


def prepared_suffix(setup: BuildSetup) -> str:
    """``""`` when the source is parsed as it is, else what the prepared file is called after."""
    if setup.convert_fp16:
        return ".fp16"
    if setup.decompose_layernorm:
        return ".ln-decomposed"
    return ""


def load_onnx(path: Path) -> Any | None:
    """The ``onnx.ModelProto`` without external data, or None where the onnx package is missing."""
    try:
        import onnx
    except ImportError:
        return None
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ArtifactError(f"{path} is not a readable ONNX model ({first_line(exc)}); re-export it") from exc


def source_kind(opts: BuildOptions) -> tuple[ArtifactInfo, bool]:
    """The source's edgevit metadata, and whether it is a Q/DQ (INT8) model.

    Raises:
        ArtifactError: the ONNX is missing or unreadable.
        QuantizationError: a Q/DQ model breaks TensorRT's Q/DQ rules (``opts.check_qdq``).
    """
    if not opts.onnx.is_file():
        raise ArtifactError(f"ONNX model {opts.onnx} does not exist")
    info = read_onnx_info(opts.onnx)
    model = load_onnx(opts.onnx)
    if model is None:  # a device without the onnx package: trust the metadata, skip the static check
        return info, info.precision == "int8"
    from edgevit.quant.rules import check_qdq_graph, summarize_qdq

    is_qdq = summarize_qdq(model)["dequantize_nodes"] > 0
    if is_qdq and opts.check_qdq:
        problems = check_qdq_graph(model)
        if problems:
            more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
            raise QuantizationError(
                f"{opts.onnx} breaks TensorRT's Q/DQ rules: {'; '.join(problems[:3])}{more}; re-run `edgevit quantize`"
            )
    return info, is_qdq


def ranges_from_table(path: Path | None) -> dict[str, float] | None:
    """Tensor name -> calibrated absolute max, from ``--range-table``."""
    if path is None:
        return None
    from edgevit.quant.table import CalibrationTable

    table = CalibrationTable.load(path)
    return {name: max(abs(r.min), abs(r.max), abs(r.amax)) for name, r in table.tensors.items()}


def prepare_onnx(opts: BuildOptions, setup: BuildSetup, dst: Path) -> tuple[Path, dict[str, Any]]:
    """Write the ONNX TensorRT will parse to ``dst`` (atomically), or return the source when it
    is parsed as it is. Returns the path and a report for the manifest.

    Raises:
        BackendError: the onnx package is missing where a rewrite is needed.
        QuantizationError: the FP16 conversion refuses (a weight or range beyond FP16).
    """
    if not prepared_suffix(setup):
        return opts.onnx, {}
    if setup.convert_fp16 and setup.decompose_layernorm:  # FP16 conversion: strongly typed, TensorRT >= 10.12
        raise QuantizationError("internal: LayerNorm decomposition and FP16 conversion never meet; report this")
    if setup.convert_fp16:
        from edgevit.engine.fp16 import convert_file

        report = convert_file(opts.onnx, dst, fp32_ops=opts.fp32_ops, ranges=ranges_from_table(opts.range_table))
        return dst, {"fp16_conversion": report.to_dict()}
    from edgevit.engine.decompose import decompose_layernorm
    from edgevit.engine.fp16 import import_onnx

    onnx = import_onnx()
    try:
        model = onnx.load(str(opts.onnx))
    except Exception as exc:
        raise ArtifactError(f"{opts.onnx} is not a readable ONNX model ({first_line(exc)}); re-export it") from exc
    out, count = decompose_layernorm(model)
    with atomic_output(dst) as tmp:
        onnx.save(out, str(tmp))
    return dst, {"layernorm_decomposed": count}


def fp32_node_names(path: Path, fp32_ops: tuple[str, ...]) -> list[str]:
    """ONNX nodes the builder-flags path pins to FP32 (TensorRT names a layer after its node):
    LayerNorm (or its decomposition) and Softmax. Used for trtexec's ``--layerPrecisions``."""
    from edgevit.engine.decompose import is_decomposed

    model = load_onnx(path)
    if model is None:
        return []
    return [n.name for n in model.graph.node if n.name and (n.op_type in fp32_ops or is_decomposed(n.name))]
