"""Export a checkpoint to an FP32 ONNX model and prove ONNX Runtime agrees with PyTorch.

The graph has one input ``images`` (float32 N x C x H x W, dynamic N) and one output
``logits`` (N x classes), opset 17 (LayerNorm as ``LayerNormalization``), written by the
TorchScript exporter (one self-contained file, about a second). The model config, class
names, preprocessing, data source and the checkpoint's sha256 go into the ONNX metadata.
Before the file appears, ONNX Runtime runs real images and its logits must match
PyTorch's within ``tolerance``.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgevit.artifacts import ArtifactInfo, atomic_output, set_onnx_metadata, sha256_file
from edgevit.data import load_dataset
from edgevit.errors import ArtifactError, DataError, EdgeVitError
from edgevit.preprocess import Preprocess
from edgevit.train import checkpoint_info, load_checkpoint, model_from_checkpoint

INPUT_NAME = "images"
OUTPUT_NAME = "logits"
DEFAULT_OPSET = 17  # first opset with LayerNormalization; TensorRT 8.5+ parses it


@dataclass
class ExportResult:
    path: Path
    max_abs_diff: float
    num_images: int
    opset: int


def export_onnx(
    checkpoint: str | Path,
    out_path: str | Path,
    opset: int = DEFAULT_OPSET,
    data: str | None = None,
    tolerance: float = 1e-3,
    num_images: int = 64,
) -> ExportResult:
    """Export ``checkpoint`` to ``out_path`` and verify it on real images.

    Args:
        checkpoint: a checkpoint written by ``edgevit train``.
        out_path: the ``.onnx`` file to write (atomically).
        opset: ONNX opset, at least 17.
        data: where to take verification images from; default: the checkpoint's data source.
        tolerance: largest allowed absolute logit difference between ONNX Runtime and PyTorch.
        num_images: how many test-split images to verify on.
    """
    if opset < 17:
        raise EdgeVitError(f"opset {opset} has no LayerNormalization op; use 17 or newer")
    checkpoint = Path(checkpoint)
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt)
    info = checkpoint_info(ckpt, source_sha256=sha256_file(checkpoint))
    cfg = info.model_config

    source = data or info.data
    if source:
        try:
            ds = load_dataset(source, preprocess=info.preprocess)
        except DataError as exc:
            raise DataError(f"cannot load verification images from {source!r} ({exc}); pass --data") from exc
        images, verify_data = ds.test.images[:num_images], f"{ds.source}:test"
    else:  # an imported checkpoint knows no data: the function is compared on noise images
        images, verify_data = random_images(info.preprocess, num_images), "random"
    x = info.preprocess(images)

    info.extra["export"] = {
        "verify_data": verify_data,
        "checkpoint": checkpoint.name,
    }
    doc = f"edgevit ViT ({cfg.depth} blocks, dim {cfg.embed_dim}) exported from {checkpoint.name}"
    max_abs = export_model(model, info, out_path, x, opset=opset, tolerance=tolerance, doc=doc)
    return ExportResult(Path(out_path), max_abs, len(x), opset)


def random_images(pre: Preprocess, n: int = 16, seed: int = 0) -> np.ndarray:
    """``n`` uint8 noise images at the preprocessing's staged size (seeded): inputs for
    comparing two implementations of one function when no data set is known."""
    s = pre.stage_size
    return np.random.default_rng(seed).integers(0, 256, size=(n, s, s, pre.channels), dtype=np.uint8)


def export_model(
    model: torch.nn.Module,
    info: ArtifactInfo,
    out_path: str | Path,
    x: np.ndarray,
    opset: int = DEFAULT_OPSET,
    tolerance: float = 1e-3,
    doc: str = "",
) -> float:
    """Export ``model`` with ``info`` as its metadata, prove ONNX Runtime matches PyTorch on
    the preprocessed batch ``x`` (within ``tolerance``), and write it atomically. Returns the
    largest absolute logit difference."""
    import onnx
    import onnxruntime as ort

    if opset < 17:
        raise EdgeVitError(f"opset {opset} has no LayerNormalization op; use 17 or newer")
    model = model.eval()
    dummy = torch.from_numpy(x[:2])
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model,
            (dummy,),
            buf,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            do_constant_folding=True,
        )
    proto = onnx.load_from_string(buf.getvalue())
    proto.producer_name = "edgevit"
    proto.doc_string = doc
    if not any(n.op_type == "LayerNormalization" for n in proto.graph.node):
        raise EdgeVitError("export produced no LayerNormalization op; use opset >= 17 and a torch that exports it")

    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    serialized_probe = proto.SerializeToString()
    sess = ort.InferenceSession(serialized_probe, providers=["CPUExecutionProvider"])
    got = sess.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    max_abs = float(np.abs(got - ref).max())
    if not max_abs <= tolerance:
        raise ArtifactError(
            f"ONNX Runtime differs from PyTorch by {max_abs:.2e} (> {tolerance:g}) on {len(x)} images; "
            "the export is wrong, report it with the checkpoint"
        )
    info.extra["export"] = {
        **info.extra.get("export", {}),
        "opset": opset,
        "max_abs_logit_diff": max_abs,
        "verify_images": len(x),
        "torch": torch.__version__,
    }
    set_onnx_metadata(proto, info)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ArtifactError(f"exported graph fails onnx.checker ({str(exc).splitlines()[0]})") from exc

    with atomic_output(Path(out_path)) as tmp:
        onnx.save_model(proto, str(tmp))
    return max_abs
