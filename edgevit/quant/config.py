"""How to calibrate and quantize (:class:`QuantizeConfig`) and what came out (:class:`QuantizeResult`).

Torch-free and light: the CLI reads its defaults from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgevit.errors import DataError, EdgeVitError
from edgevit.quant.graph import WEIGHTED_OPS
from edgevit.quant.table import CalibrationTable

METHODS = ("max", "percentile", "entropy", "mse", "auto")
DEFAULT_NUM_IMAGES = 512  # NVIDIA recommends >= 500 for ViTs


@dataclass
class QuantizeConfig:
    """How to calibrate and quantize.

    Args:
        method: ``max`` (observed absolute maximum), ``percentile`` (clip the tail of
            the absolute-value histogram), ``entropy`` (KL-divergence threshold), ``mse``
            (minimum expected squared error) or ``auto`` (per tensor, the one of these
            bounds that least changes the output of the layer reading it). All come from one
            pass. Whatever the method, the network input keeps the range the preprocessing can
            produce, and a Softmax output is never clipped below its 99.999th percentile.
        percentile: for ``percentile``: the share of |values| kept unclipped.
        num_bins: histogram bins per tensor (default 2048, for every method).
        num_images: calibration images, drawn from the training split (never val/test);
            the whole split when it is smaller.
        batch_size: images per calibration batch (capped so one batch of intermediate
            tensors stays under ``batch_bytes``).
        seed: which training images are drawn (calibration, auto and held-out slices).
        op_types: weighted ops that get Q/DQ on their inputs.
        int8_attention: also quantize the attention batch matmuls (``Q @ K^T``, ``softmax @ V``).
            Off by default: they stay in floating point (FP16 on the device with ``--precision
            best``), Linear and Conv layers are INT8.
        smoothquant: fold SmoothQuant scales into the LayerNorm -> Linear pairs.
        smoothquant_alpha: migration strength (0: none, 1: all range into the weights).
        bias_correction: subtract the expected output shift of INT8 weights from biases.
        budget: largest top-1 drop (points, on held-out training images) before layers
            fall back to floating point; None: everything INT8.
        min_agreement: smallest top-1 agreement (percent) the fallback must keep; None: no gate.
        holdout_images: held-out training images for the sensitivity scan.
        auto_images: calibration images on which ``auto`` compares bounds (one forward pass).
        batch_bytes: byte budget of one calibration batch's intermediate tensors.
        threads: ONNX Runtime threads for calibration (None: all cores).
    """

    method: str = "percentile"  # with SmoothQuant on, as good as auto on the nano models (benchmarks), and one pass
    percentile: float = 99.999  # 99.99 clipped the attention and MLP inputs of trained ViTs too hard (benchmarks)
    num_bins: int | None = None
    num_images: int = DEFAULT_NUM_IMAGES
    batch_size: int = 32
    seed: int = 0
    op_types: tuple[str, ...] = WEIGHTED_OPS
    # softmax @ V was most of the INT8 error on every benchmark model (its probabilities are
    # heavy-tailed: no uniform symmetric INT8 scale fits them); in floating point the mean KL
    # fell 4x and top-1 agreement rose above every TensorRT-ready peer's (quant_accuracy.md)
    int8_attention: bool = False
    smoothquant: bool = True  # outlier nano model: 95.6% -> 100% top-1 agreement (benchmarks/quant_accuracy.md)
    smoothquant_alpha: float = 0.5  # SmoothQuant's default
    bias_correction: bool = False
    budget: float | None = None
    min_agreement: float | None = None
    holdout_images: int = 256
    auto_images: int = 128  # enough to rank bounds; one forward pass plus a few matmuls per candidate
    batch_bytes: int = 512 << 20  # keeps the tiny preset's calibration well under 3 GB
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise EdgeVitError(f"unknown calibration method {self.method!r}; choose one of {', '.join(METHODS)}")
        if not 0.0 < self.percentile <= 100.0:
            raise EdgeVitError(f"percentile must be in (0, 100], got {self.percentile}")
        if self.num_images < 2:
            raise DataError(f"calibration needs at least 2 images, got num_images={self.num_images}")
        bad = set(self.op_types) - set(WEIGHTED_OPS)
        if bad:
            raise EdgeVitError(f"only {WEIGHTED_OPS} may be quantized (TensorRT policy), not {sorted(bad)}")
        if not 0.0 <= self.smoothquant_alpha <= 1.0:
            raise EdgeVitError(f"smoothquant alpha must be in [0, 1], got {self.smoothquant_alpha}")
        if self.min_agreement is not None and not 0.0 <= self.min_agreement <= 100.0:
            raise EdgeVitError(f"min agreement is a percentage in [0, 100], got {self.min_agreement}")
        if self.bins < 256:
            raise EdgeVitError(f"num_bins must be at least 256, got {self.bins}")

    @property
    def bins(self) -> int:
        return self.num_bins if self.num_bins is not None else 2048

    def settings(self) -> dict[str, Any]:
        s: dict[str, Any] = {
            "seed": self.seed,
            "batch_size": self.batch_size,
            "op_types": list(self.op_types),
            "attention": "int8" if self.int8_attention else "float",
            "percentile": self.percentile,
            "num_bins": self.bins,
        }
        if self.method == "auto":
            s["auto_images"] = self.auto_images
        return s


@dataclass
class QuantizeResult:
    path: Path
    table: CalibrationTable
    table_path: Path
    cache_path: Path
    summary: dict[str, int] = field(default_factory=dict)
    budget_met: bool = True
    message: str = ""  # why a budget was not met, when it was not
