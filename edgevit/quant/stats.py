"""One calibration pass, every range method: streaming per-tensor statistics.

:func:`collect_stats` runs an ONNX model once over the calibration batches and keeps, per
float tensor, the observed min/max and a fixed-size histogram of ``|x|`` whose range
grows by doubling (two neighbouring bins merge into one, so earlier batches are never
re-binned approximately). Memory is ``tensors x bins`` whatever the image count, and the
batch size is capped so one batch of intermediate tensors stays within a byte budget.

From a histogram, :func:`amax_for` derives the symmetric clipping bound of every method:

* ``max``: the observed absolute maximum;
* ``percentile``: the upper edge of the bin where the CDF of ``|x|`` reaches ``p``;
* ``entropy``: the TensorRT-style KL threshold (the clipped distribution against its
  128-level quantized version), evaluated for every candidate bin at once with cumulative
  sums instead of ONNX Runtime's quadratic loop;
* ``mse``: the bound minimizing expected squared error (uniform rounding noise
  ``s^2/12`` inside the range, exact clipping error outside), closed form per candidate.

No torch here: this runs wherever ONNX Runtime does.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgevit.errors import DataError, QuantizationError

RANGE_METHODS = ("max", "percentile", "entropy", "mse")
NUM_QUANT_LEVELS = 128  # |x| levels of symmetric signed INT8 (0..127)
# Ops whose output holds exactly the values of their first input: their statistics are
# the input's, so they are measured once.
VALUE_PRESERVING_OPS = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity")


@dataclass
class TensorStats:
    """Streaming statistics of one tensor.

    Args:
        bins: histogram bins over ``[0, hist_max]`` of ``|x|``.
    """

    bins: int = 2048
    min: float = float("inf")
    max: float = float("-inf")
    count: int = 0
    hist: np.ndarray | None = None  # int64 counts of |x|
    hist_max: float = 0.0  # upper edge of the last bin
    channel_sum: np.ndarray | None = None  # per last-axis channel, for bias correction
    channel_amax: np.ndarray | None = None  # per last-axis channel, for SmoothQuant

    @property
    def amax(self) -> float:
        return max(abs(self.min), abs(self.max)) if self.count else 0.0

    @property
    def channel_mean(self) -> np.ndarray | None:
        if self.channel_sum is None or not self.count:
            return None
        channels = self.channel_sum.shape[0]
        return self.channel_sum / max(1, self.count // channels)

    def update(self, x: np.ndarray, channels: bool = False) -> None:
        x = np.asarray(x, dtype=np.float32)
        if x.size == 0:
            return
        lo, hi = float(x.min()), float(x.max())
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise QuantizationError("a tensor holds Inf/NaN on calibration images; the model or the images are broken")
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        self.count += int(x.size)
        if channels and x.ndim >= 2:
            flat = x.reshape(-1, x.shape[-1])
            s = flat.sum(axis=0, dtype=np.float64)
            m = np.abs(flat).max(axis=0).astype(np.float64)
            self.channel_sum = s if self.channel_sum is None else self.channel_sum + s
            self.channel_amax = m if self.channel_amax is None else np.maximum(self.channel_amax, m)
        a = np.abs(x).reshape(-1)
        amax = max(abs(lo), abs(hi))
        if self.hist is None:
            self.hist = np.zeros(self.bins, dtype=np.int64)
            self.hist_max = amax if amax > 0 else 1e-8
        if amax > self.hist_max:
            self._grow(amax)
        idx = (a * (self.bins / self.hist_max)).astype(np.int64)
        np.minimum(idx, self.bins - 1, out=idx)
        self.hist += np.bincount(idx, minlength=self.bins)

    def _grow(self, amax: float) -> None:
        assert self.hist is not None
        factor = 1
        while self.hist_max * factor < amax:
            factor *= 2
        if factor >= self.bins:
            merged = np.zeros(self.bins, dtype=np.int64)
            merged[0] = self.hist.sum()
        else:
            merged = np.zeros(self.bins, dtype=np.int64)
            merged[: self.bins // factor] = self.hist.reshape(-1, factor).sum(axis=1)
        self.hist, self.hist_max = merged, self.hist_max * factor

    def amax_for(self, method: str, percentile: float = 99.99) -> float:
        """The symmetric clipping bound ``method`` picks from these statistics."""
        if method == "max" or self.hist is None or self.amax == 0.0:
            return self.amax
        width = self.hist_max / self.bins
        if method == "percentile":
            amax = percentile_amax(self.hist, width, percentile)
        elif method == "entropy":
            amax = entropy_amax(self.hist, width)
        elif method == "mse":
            amax = mse_amax(self.hist, width)
        else:
            raise QuantizationError(f"unknown range method {method!r}; choose one of {', '.join(RANGE_METHODS)}")
        return float(min(amax, self.amax))

    def candidates(self, percentile: float = 99.99) -> dict[str, float]:
        """Every method's bound, so a table can switch methods without another pass."""
        return {m: self.amax_for(m, percentile) for m in RANGE_METHODS}

    def quantile_abs(self, q: float) -> float:
        """Approximate ``q``-quantile (0..1) of ``|x|``."""
        if self.hist is None:
            return 0.0
        return min(self.amax, percentile_amax(self.hist, self.hist_max / self.bins, 100.0 * q))


def percentile_amax(hist: np.ndarray, width: float, percentile: float) -> float:
    cdf = np.cumsum(hist, dtype=np.float64)
    total = cdf[-1]
    if total <= 0:
        return 0.0
    i = int(np.searchsorted(cdf, total * percentile / 100.0, side="left"))
    return (min(i, len(hist) - 1) + 1) * width


def entropy_amax(hist: np.ndarray, width: float, levels: int = NUM_QUANT_LEVELS) -> float:
    """TensorRT-style KL calibration, vectorized over every threshold bin ``i >= levels``.

    For threshold ``i`` the reference ``P`` is ``hist[:i]`` with the clipped tail added to
    its last bin; the candidate ``Q`` spreads each of ``levels`` spans' mass of the
    *unclipped* slice ``hist[:i]`` evenly over the span's nonzero bins (so a threshold that
    clips a heavy tail pays for it). Each span's share of ``KL(P||Q)`` needs only cumulative
    sums of ``h``, ``h log h`` and ``h > 0``; the last bin is then corrected for the tail.
    """
    h = hist.astype(np.float64)
    n = len(h)
    total = float(h.sum())
    if n <= levels or total <= 0:
        return n * width

    def xlogx(v: np.ndarray) -> np.ndarray:
        return np.where(v > 0, v * np.log(np.where(v > 0, v, 1.0)), 0.0)

    c_h = np.concatenate([[0.0], np.cumsum(h)])
    c_l = np.concatenate([[0.0], np.cumsum(xlogx(h))])
    c_n = np.concatenate([[0.0], np.cumsum(h > 0)])
    cand = np.arange(levels, n + 1)  # threshold after bin i-1
    edges = (cand[:, None] * np.arange(levels + 1)[None, :]) // levels  # [C, levels+1]
    s = c_h[edges[:, 1:]] - c_h[edges[:, :-1]]
    lsum = c_l[edges[:, 1:]] - c_l[edges[:, :-1]]
    nnz = c_n[edges[:, 1:]] - c_n[edges[:, :-1]]
    kept = c_h[cand]  # mass of Q
    log_t = np.log(total)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_q_span = np.log(np.where(s > 0, s, 1.0) / np.maximum(nnz, 1.0)) - np.log(np.maximum(kept, 1.0))[:, None]
        kl = np.where(s > 0, lsum - s * log_t - s * log_q_span, 0.0).sum(axis=1) / total
        # last bin: P gets the tail; Q keeps the span's even share (or a small floor if empty)
        last, tail = h[cand - 1], total - kept
        log_q_last = np.where(last > 0, log_q_span[:, -1], np.log(1e-4))
        old = np.where(last > 0, (xlogx(last) - last * log_t - last * log_q_last) / total, 0.0)
        p_new = (last + tail) / total
        new = np.where(p_new > 0, p_new * (np.log(np.maximum(p_new, 1e-300)) - log_q_last), 0.0)
        kl = kl - old + new
    best = int(cand[int(np.argmin(kl))])
    return best * width


def mse_amax(hist: np.ndarray, width: float, levels: int = NUM_QUANT_LEVELS - 1) -> float:
    """Bound minimizing ``sum_k h_k E[(x - q(x))^2]`` over every bin edge."""
    h = hist.astype(np.float64)
    n = len(h)
    centers = (np.arange(n) + 0.5) * width
    c_h = np.concatenate([[0.0], np.cumsum(h)])
    c_hx = np.concatenate([[0.0], np.cumsum(h * centers)])
    c_hxx = np.concatenate([[0.0], np.cumsum(h * centers * centers)])
    k = np.arange(1, n + 1)  # threshold = k * width
    a = k * width
    step = a / levels
    inside = c_h[k] * step * step / 12.0
    t_h, t_hx, t_hxx = c_h[-1] - c_h[k], c_hx[-1] - c_hx[k], c_hxx[-1] - c_hxx[k]
    outside = t_hxx - 2.0 * a * t_hx + a * a * t_h
    return float(a[int(np.argmin(inside + outside))])


def float_tensors(model: Any) -> dict[str, tuple[int | str | None, ...]]:
    """Name -> shape (None/str for unknown dims) of every float tensor a node produces,
    plus the float graph inputs (after ONNX shape inference)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    infos = list(g.input) + list(g.value_info) + list(g.output)
    inits = {t.name for t in g.initializer}
    out: dict[str, tuple[int | str | None, ...]] = {}
    for vi in infos:
        tt = vi.type.tensor_type
        if tt.elem_type != onnx.TensorProto.FLOAT or vi.name in inits:
            continue
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim)
        out[vi.name] = dims
    produced = {o for n in g.node for o in n.output} | {i.name for i in g.input}
    constant_outputs = {o for n in g.node if n.op_type in ("Constant", "ConstantOfShape") for o in n.output}
    return {k: v for k, v in out.items() if k in produced and k not in constant_outputs}


def value_aliases(model: Any, names: Iterable[str]) -> dict[str, str]:
    """tensor -> the earlier tensor holding exactly the same values (through reshapes)."""
    wanted = set(names)
    alias: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type in VALUE_PRESERVING_OPS and node.input and node.output[0] in wanted:
            src = node.input[0]
            if src in wanted:
                alias[node.output[0]] = alias.get(src, src)
    return alias


def per_image_bytes(shapes: dict[str, tuple[int | str | None, ...]]) -> int:
    total = 0
    for dims in shapes.values():
        size = 1
        for d in dims[1:]:
            size *= d if isinstance(d, int) and d > 0 else 1
        total += 4 * size
    return total


@dataclass
class CollectResult:
    stats: dict[str, TensorStats]
    aliases: dict[str, str]
    batch_size: int
    num_images: int
    extra: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str) -> TensorStats:
        return self.stats[self.aliases.get(name, name)]


def collect_stats(
    model: Any,
    batches: Iterable[np.ndarray],
    tensors: Iterable[str] | None = None,
    channel_tensors: Iterable[str] = (),
    bins: int = 2048,
    threads: int | None = None,
) -> CollectResult:
    """One pass of ``model`` (``onnx.ModelProto``) over ``batches`` (preprocessed NCHW).

    Args:
        tensors: names to measure; default every float tensor.
        channel_tensors: tensors that also get per-channel (last axis) sums and maxima.
        bins: histogram bins per tensor.
    """
    import onnx
    import onnxruntime as ort

    shapes = float_tensors(model)
    names = list(shapes) if tensors is None else [t for t in tensors if t in shapes]
    aliases = value_aliases(model, names)
    channel_set = set(channel_tensors)
    measured = [n for n in names if n not in aliases or n in channel_set]
    for n in channel_set:
        aliases.pop(n, None)
    aug = onnx.ModelProto()
    aug.CopyFrom(model)
    existing = {o.name for o in aug.graph.output}
    input_name = aug.graph.input[0].name
    for n in measured:
        if n not in existing and n != input_name:
            aug.graph.output.append(onnx.helper.make_empty_tensor_value_info(n))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(aug.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
    out_names = [o.name for o in sess.get_outputs()]
    stats = {n: TensorStats(bins=bins) for n in measured}
    num_images = 0
    for x in batches:
        if not np.isfinite(x).all():
            raise DataError("a calibration batch contains NaN or Inf after preprocessing; check the images")
        outs = sess.run(out_names, {input_name: x})
        if input_name in stats:
            stats[input_name].update(x, input_name in channel_set)
        for name, value in zip(out_names, outs):
            if name in stats:
                stats[name].update(value, name in channel_set)
        del outs
        num_images += len(x)
    return CollectResult(stats, aliases, 0, num_images)


def iter_batches(
    images: np.ndarray, preprocess: Any, batch_size: int
) -> Iterator[np.ndarray]:  # preprocess: edgevit.preprocess.Preprocess
    for i in range(0, len(images), batch_size):
        yield preprocess(images[i : i + batch_size])


def capped_batch_size(model: Any, wanted: int, budget_bytes: int = 512 << 20) -> int:
    """Largest batch (<= ``wanted``) whose intermediate tensors fit ``budget_bytes``."""
    per_image = per_image_bytes(float_tensors(model))
    return max(1, min(wanted, budget_bytes // max(1, per_image)))
