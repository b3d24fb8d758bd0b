"""``edgevit inspect FP32 INT8``: where a Q/DQ model loses accuracy, tensor by tensor.

Both ONNX models run side by side on the same preprocessed images (the test split of the
training data by default). For every quantized tensor of the INT8 model (each
QuantizeLinear input, and each INT8 weight) the report gives:

* ``sqnr_db``: signal-to-quantization-noise ratio of that tensor's own Q/DQ round trip,
  ``10 log10(sum x^2 / sum (x - DQ(Q(x)))^2)`` on the INT8 model's values;
* ``sqnr_vs_fp32_db``: the same against the FP32 model's tensor (all upstream error
  included), so the layer where the error grows stands out;
* the range used (``amax = 127 * scale``) against the observed distribution (FP32 max,
  99.99th percentile of ``|x|``) and the share of values clipped.

It writes ``layers.json``, ``layers.md``, ``sqnr_by_layer.png`` and
``worst_histograms.png``. SmoothQuant-folded tensors are compared after dividing the FP32
values by the recorded scales. Needs no torch.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgevit.artifacts import read_onnx_info, sha256_file, write_json_atomic, write_text_atomic
from edgevit.errors import ArtifactError, EdgeVitError, InputError
from edgevit.quant.stats import TensorStats

INT8_MAX = 127.0


@dataclass
class TensorError:
    tensor: str
    kind: str  # "activation" or "weight"
    layers: list[str]  # consuming MatMul/Gemm/Conv nodes
    amax: float  # range used: 127 * scale (max over channels for weights)
    observed_min: float
    observed_max: float
    observed_p9999: float  # 99.99th percentile of |x| (FP32)
    clipped_percent: float  # share of |x| beyond amax
    sqnr_db: float
    sqnr_vs_fp32_db: float


@dataclass
class LayerReport:
    reference: str
    candidate: str
    images: int
    data: str
    agreement: float
    mean_kl: float
    cosine: float
    tensors: list[TensorError]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def worst(self, n: int = 5) -> list[TensorError]:
        return sorted(self.tensors, key=lambda t: t.sqnr_vs_fp32_db)[:n]

    def to_markdown(self) -> str:
        lines = [
            f"# Per-layer quantization error: {self.candidate} against {self.reference}",
            "",
            f"{self.images} images from `{self.data}`: top-1 agreement {self.agreement:.2f}%, "
            f"mean KL {self.mean_kl:.3g} nats, logit cosine {self.cosine:.6f}.",
            "",
            "SQNR: own Q/DQ round trip / against the FP32 tensor (upstream error included). "
            "Range: the INT8 bound against the FP32 99.99th percentile and maximum of |x|.",
            "",
            "| tensor | kind | layers | SQNR dB | vs FP32 dB | amax | p99.99 | max abs | clipped |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for t in self.tensors:
            obs = max(abs(t.observed_min), abs(t.observed_max))
            lines.append(
                f"| `{t.tensor}` | {t.kind} | {', '.join(f'`{n}`' for n in t.layers)} | {t.sqnr_db:.1f} | "
                f"{t.sqnr_vs_fp32_db:.1f} | {t.amax:.4g} | {t.observed_p9999:.4g} | {obs:.4g} | "
                f"{t.clipped_percent:.3f}% |"
            )
        worst = ", ".join(f"`{t.tensor}` ({t.sqnr_vs_fp32_db:.1f} dB)" for t in self.worst(3))
        lines += ["", f"Lowest SQNR against FP32: {worst}."]
        return "\n".join(lines) + "\n"


def _sqnr(signal: float, noise: float) -> float:
    if noise <= 0:
        return float("inf") if signal > 0 else 0.0
    if signal <= 0:
        return float("-inf")
    return float(10.0 * np.log10(signal / noise))


def _const(model: Any, name: str) -> np.ndarray | None:
    from onnx import numpy_helper

    for t in model.graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            return numpy_helper.to_array(n.attribute[0].t)
    return None


def _session(model: Any, outputs: list[str]):
    import onnx
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for name in outputs:
        if name not in have:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def inspect_layers(
    reference: str | Path,
    candidate: str | Path,
    images: np.ndarray,
    data: str = "",
    batch_size: int = 32,
) -> LayerReport:
    """Run the FP32 ``reference`` and the Q/DQ ``candidate`` on ``images`` (uint8) and
    measure every quantized tensor."""
    import onnx

    from edgevit.metrics import compare_logits

    if len(images) == 0:
        raise InputError("no images to inspect")
    ref_info, cand_info = read_onnx_info(reference), read_onnx_info(candidate)
    if ref_info.precision != "fp32" or cand_info.precision != "int8":
        raise ArtifactError(
            f"inspect compares an FP32 model with its INT8 Q/DQ model; got {ref_info.precision} and "
            f"{cand_info.precision}"
        )
    # the tensors are matched by name: against another FP32 model the report would be noise
    ref_sha = sha256_file(reference)
    if cand_info.source_sha256 and cand_info.source_sha256 != ref_sha:
        raise ArtifactError(
            f"{candidate} was quantized from an FP32 model with sha256 {cand_info.source_sha256[:12]}, but {reference} "
            f"is {ref_sha[:12]}; pass the FP32 model it was made from"
        )
    fp32, int8 = onnx.load(str(reference)), onnx.load(str(candidate))
    ref_inputs = (
        {t.name for t in fp32.graph.initializer}
        | {o for n in fp32.graph.node for o in n.output}
        | {i.name for i in fp32.graph.input}
    )
    consumers: dict[str, list[Any]] = {}
    for n in int8.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    scales = {
        k: np.asarray(v, np.float32)
        for k, v in ((cand_info.extra.get("quantization") or {}).get("smoothquant") or {}).get("scales", {}).items()
    }
    # SmoothQuant divided these activations by s (the LayerNorm output and what is gathered
    # from it) and multiplied these weights' input channels by s: compare against FP32 so
    smooth: dict[str, np.ndarray] = {}  # activation -> s
    smooth_weights: dict[str, tuple[np.ndarray, int]] = {}  # weight initializer -> (s, input-channel axis)
    if scales:
        from edgevit.quant.smoothquant import find_layernorm_pairs

        for pair in find_layernorm_pairs(fp32):
            s = scales.get(pair.output)
            if s is None:
                continue
            smooth.update((t, s) for t in (pair.output, *pair.inputs))
            smooth_weights.update((w, (s, ax)) for w, ax in zip(pair.weights, pair.weight_in_axes))

    def layers_of(dq_out: str) -> list[str]:
        return [c.name for c in consumers.get(dq_out, [])]

    acts: dict[str, tuple[float, list[str]]] = {}  # tensor -> (scale, layers)
    weights: list[TensorError] = []
    for n in int8.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[0] in ref_inputs:
            scale = _const(int8, n.input[1])
            if scale is None:
                continue
            layers = []
            for dq in consumers.get(n.output[0], []):
                layers += layers_of(dq.output[0])
            acts[n.input[0]] = (float(np.asarray(scale).reshape(-1)[0]), layers)
        elif n.op_type == "DequantizeLinear":
            q = _const(int8, n.input[0])
            scale = _const(int8, n.input[1])
            if q is None or scale is None or q.dtype != np.int8:
                continue
            name = n.input[0][: -len("_quantized")] if n.input[0].endswith("_quantized") else n.input[0]
            w_ref = _const(fp32, name)
            if w_ref is None or w_ref.shape != q.shape:
                continue
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            shape = [1] * q.ndim
            if scale.size > 1:
                shape[axis] = scale.size
            deq = q.astype(np.float32) * scale.reshape(shape)
            users = consumers.get(n.output[0], [])
            if name in smooth_weights:
                s, ax = smooth_weights[name]
                w_ref = w_ref * (s[:, None] if ax == 0 else s[None, :])
            noise = float(np.sum((w_ref.astype(np.float64) - deq) ** 2))
            signal = float(np.sum(w_ref.astype(np.float64) ** 2))
            amax = float(np.max(scale)) * INT8_MAX
            stats = TensorStats()
            stats.update(w_ref)
            weights.append(
                TensorError(
                    tensor=name,
                    kind="weight",
                    layers=[u.name for u in users],
                    amax=amax,
                    observed_min=float(w_ref.min()),
                    observed_max=float(w_ref.max()),
                    observed_p9999=stats.quantile_abs(0.9999),
                    clipped_percent=0.0,  # per-channel max scaling never clips
                    sqnr_db=_sqnr(signal, noise),
                    sqnr_vs_fp32_db=_sqnr(signal, noise),
                )
            )
    names = list(acts)
    input_name = fp32.graph.input[0].name
    ref_out, cand_out = fp32.graph.output[0].name, int8.graph.output[0].name
    s_ref = _session(fp32, [t for t in names if t != input_name])
    s_cand = _session(int8, [t for t in names if t != input_name])
    acc = {t: np.zeros(3) for t in names}  # signal, own noise, noise vs fp32
    sig_own = {t: 0.0 for t in names}
    clipped = {t: 0 for t in names}
    count = {t: 0 for t in names}
    hist = {t: TensorStats(bins=1024) for t in names}
    ref_logits, cand_logits = [], []
    for i in range(0, len(images), batch_size):
        x = ref_info.preprocess(images[i : i + batch_size])
        out_names = [ref_out] + [t for t in names if t != input_name]
        r = dict(zip(out_names, s_ref.run(out_names, {input_name: x})))
        out_names_c = [cand_out] + [t for t in names if t != input_name]
        c = dict(zip(out_names_c, s_cand.run(out_names_c, {input_name: x})))
        r[input_name] = c[input_name] = x
        ref_logits.append(r[ref_out])
        cand_logits.append(c[cand_out])
        for t in names:
            scale = acts[t][0]
            xr = r[t].astype(np.float64)
            xc = c[t].astype(np.float64)
            if t in smooth:
                xr = xr / smooth[t]
            dq = np.clip(np.rint(xc / scale), -INT8_MAX - 1, INT8_MAX) * scale
            acc[t] += [np.sum(xr * xr), np.sum((xc - dq) ** 2), np.sum((xr - dq) ** 2)]
            sig_own[t] += float(np.sum(xc * xc))
            clipped[t] += int(np.count_nonzero(np.abs(xc) > scale * INT8_MAX))
            count[t] += xc.size
            hist[t].update(xr)
    tensors = []
    for t in names:
        st = hist[t]
        tensors.append(
            TensorError(
                tensor=t,
                kind="activation",
                layers=acts[t][1],
                amax=acts[t][0] * INT8_MAX,
                observed_min=st.min,
                observed_max=st.max,
                observed_p9999=st.quantile_abs(0.9999),
                clipped_percent=100.0 * clipped[t] / max(1, count[t]),
                sqnr_db=_sqnr(sig_own[t], acc[t][1]),
                sqnr_vs_fp32_db=_sqnr(acc[t][0], acc[t][2]),
            )
        )
        tensors[-1].hist = (st.hist, st.hist_max)  # type: ignore[attr-defined]
    cmp = compare_logits(np.concatenate(ref_logits), np.concatenate(cand_logits))
    report = LayerReport(
        reference=Path(reference).name,
        candidate=Path(candidate).name,
        images=len(images),
        data=data,
        agreement=cmp["agreement"],
        mean_kl=cmp["mean_kl"],
        cosine=cmp["cosine"],
        tensors=tensors + weights,
    )
    return report


def save_report(report: LayerReport, out_dir: str | Path, worst: int = 4) -> list[Path]:
    """Write ``layers.json``, ``layers.md`` and the two PNG plots; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "layers.json", out_dir / "layers.md"]
    d = report.to_dict()
    write_json_atomic(paths[0], d)
    write_text_atomic(paths[1], report.to_markdown())
    paths += _plots(report, out_dir, worst)
    return paths


def _plots(report: LayerReport, out_dir: Path, worst: int) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acts = [t for t in report.tensors if t.kind == "activation"]
    wts = [t for t in report.tensors if t.kind == "weight"]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.3 * len(acts) + 2), 4.5))
    labels = [
        (t.layers[0] if t.layers else t.tensor).strip("/").replace("/MatMul", "").replace("blocks/", "")[-28:]
        for t in acts
    ]
    xs = np.arange(len(acts))
    ax.plot(xs, [t.sqnr_db for t in acts], "o-", label="activation: own Q/DQ")
    ax.plot(xs, [t.sqnr_vs_fp32_db for t in acts], "s-", label="activation: vs FP32 (accumulated)")
    if wts:
        ax.axhline(float(np.median([t.sqnr_db for t in wts])), color="gray", ls="--", label="weights (median)")
    ax.set_xticks(xs, labels, rotation=75, fontsize=7)
    ax.set_ylabel("SQNR (dB)")
    ax.set_title(f"{report.candidate}: SQNR by layer ({report.images} images)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    p1 = out_dir / "sqnr_by_layer.png"
    fig.savefig(p1, dpi=100)
    plt.close(fig)

    bad = [t for t in report.worst(len(report.tensors)) if t.kind == "activation"][:worst]
    fig, axes = plt.subplots(1, max(1, len(bad)), figsize=(4 * max(1, len(bad)), 3.2), squeeze=False)
    for ax, t in zip(axes[0], bad):
        h, hmax = getattr(t, "hist", (None, 0.0))
        if h is not None:
            edges = np.linspace(0, hmax, len(h) + 1)
            ax.stairs(np.maximum(h, 0.5), edges, fill=True)
            ax.set_yscale("log")
        ax.axvline(t.amax, color="red", label=f"INT8 amax {t.amax:.3g}")
        ax.axvline(t.observed_p9999, color="green", ls="--", label=f"p99.99 {t.observed_p9999:.3g}")
        ax.set_title(f"{t.tensor[-32:]}\nSQNR {t.sqnr_vs_fp32_db:.1f} dB", fontsize=8)
        ax.set_xlabel("|x| (FP32)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    p2 = out_dir / "worst_histograms.png"
    fig.savefig(p2, dpi=100)
    plt.close(fig)
    return [p1, p2]


def handler(args: argparse.Namespace) -> int:
    from edgevit.data import load_dataset

    info = read_onnx_info(args.reference)
    source = args.data or info.data
    if not source:
        raise EdgeVitError(f"{args.reference} does not say which data it was trained on; pass --data DIR")
    ds = load_dataset(source, preprocess=info.preprocess)
    images = ds.split(args.split).images[: args.limit]
    report = inspect_layers(args.reference, args.candidate, images, f"{ds.source}:{args.split}")
    out = Path(args.out) if args.out else Path(args.candidate).parent / "layers"
    paths = save_report(report, out, worst=args.worst)
    worst = ", ".join(f"{t.tensor} ({t.sqnr_vs_fp32_db:.1f} dB)" for t in report.worst(3))
    print(
        f"{len(report.tensors)} quantized tensors; agreement {report.agreement:.2f}%, mean KL {report.mean_kl:.3g}; "
        f"lowest SQNR: {worst}"
    )
    print("report: " + ", ".join(str(p) for p in paths))
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("inspect", help="per-layer quantization error (SQNR, ranges) of an INT8 model vs FP32")
    p.add_argument("reference", help="FP32 ONNX")
    p.add_argument("candidate", help="INT8 Q/DQ ONNX made from it")
    p.add_argument("--data", help="images (default: the data the reference was trained on)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--limit", type=int, default=256, help="use at most N images")
    p.add_argument("--worst", type=int, default=4, help="histograms of the N tensors with the lowest SQNR")
    p.add_argument("--out", help="report folder (default: <candidate folder>/layers)")
    p.set_defaults(func=handler)
