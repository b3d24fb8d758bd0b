"""Quantization accuracy benchmark: calibration methods and options, on three model cases.

Cases (each: FP32 and INT8 top-1 on the held-out test split, the drop, top-1 agreement and
mean KL of the softmax outputs, and the calibration time):

1. ``digits``: the ``nano`` model trained on the built-in digits (default training);
2. ``outliers``: the same model with a few LayerNorm output channels scaled up by a large
   factor and the matching weight rows of the next Linear divided by it (identical FP32
   function, activations with the outliers trained ViTs have);
3. ``folder``: any image folder given with ``--folder`` (a nano model is trained on it).

Also: calibration stability (five calibration draws: mean and standard deviation of the
drop), the calibration-size study (32, 128, 512 images), and the peak memory and time of
calibrating the ``tiny`` preset (DeiT-Tiny shape, random weights) on 512 images, measured
in a child process.

    python benchmarks/bench_quant_accuracy.py --out benchmarks/quant_accuracy.json
    python benchmarks/bench_quant_accuracy.py --quick --out /tmp/q.json   # a 1-minute smoke run

Writes the JSON results and prints a Markdown summary.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

VARIANTS: dict[str, dict[str, Any]] = {
    "max": {"method": "max", "smoothquant": False},
    "percentile": {"method": "percentile", "smoothquant": False},
    "entropy": {"method": "entropy", "smoothquant": False},
    "mse": {"method": "mse", "smoothquant": False},
    "auto": {"method": "auto", "smoothquant": False},
    "max+smoothquant": {"method": "max", "smoothquant": True},
    "percentile+smoothquant (default)": {"method": "percentile", "smoothquant": True},
    "auto+smoothquant": {"method": "auto", "smoothquant": True},
    "auto+smoothquant+bias-corr": {"method": "auto", "smoothquant": True, "bias_correction": True},
}
QUICK_VARIANTS = ("max", "percentile+smoothquant (default)")


@dataclass
class Case:
    name: str
    fp32: Path
    data: str


def _train(out: Path, data: str, epochs: int, img_size: int | None = None) -> Path:
    from edgevit.export import export_onnx
    from edgevit.train import TrainConfig, train

    trained = train(TrainConfig(data=data, epochs=epochs, seed=0, threads=1, img_size=img_size), out, progress=False)
    return export_onnx(trained.checkpoint, out / "model.onnx", data=data).path


def _outlier_model(fp32: Path, out: Path, channels: int, factor: float) -> Path:
    import onnx

    from edgevit.quant.smoothquant import inject_outliers

    m = onnx.load(str(fp32))
    inject_outliers(m, channels=channels, factor=factor)
    path = out / "outliers.onnx"
    onnx.save(m, str(path))
    return path


def evaluate(case: Case, cfg_kwargs: dict[str, Any], work: Path, tag: str) -> dict[str, Any]:
    from edgevit import runtime
    from edgevit.data import load_dataset
    from edgevit.metrics import compare_logits
    from edgevit.quant.config import QuantizeConfig
    from edgevit.quant.quantize import quantize_onnx

    cfg = QuantizeConfig(**cfg_kwargs)
    t0 = time.perf_counter()
    r = quantize_onnx(
        case.fp32, work / f"{tag}.int8.onnx", cfg, calib_dir=work / "calib", data=case.data, progress=False
    )
    seconds = time.perf_counter() - t0
    with runtime.load(case.fp32) as fp:
        mc = fp.info.model_config
        ds = load_dataset(case.data, size=mc.img_size, channels=mc.in_chans)
        x = fp.preprocess(ds.test.images)
        ref = fp.logits(x)
    with runtime.load(r.path) as q:
        cand = q.logits(x)
    y = ds.test.labels
    fp_top1 = 100.0 * float((ref.argmax(1) == y).mean())
    q_top1 = 100.0 * float((cand.argmax(1) == y).mean())
    c = compare_logits(ref, cand)
    methods: dict[str, int] = {}
    for t in r.table.tensors.values():
        if t.quantized:
            methods[t.method] = methods.get(t.method, 0) + 1
    return {
        "fp32_top1": fp_top1,
        "int8_top1": q_top1,
        "drop": fp_top1 - q_top1,
        "agreement": c["agreement"],
        "mean_kl": c["mean_kl"],
        "quantize_s": seconds,
        "test_images": len(y),
        "tensor_methods": methods,
        "float_layers": list(r.table.float_layers),
    }


def export_tiny(path: Path) -> Path:
    """The tiny preset (DeiT-Tiny shape) with random weights, exported like ``edgevit export``."""
    import torch

    from edgevit.config import preset
    from edgevit.model import VisionTransformer

    if path.exists():
        return path
    torch.manual_seed(0)
    torch.onnx.export(
        VisionTransformer(preset("tiny")).eval(),
        (torch.randn(1, 3, 224, 224),),
        str(path),
        input_names=["images"],
        output_names=["logits"],
        opset_version=17,
        dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
        dynamo=False,
    )
    return path


TINY_CHILD = """
import json, resource, sys, time
import numpy as np
from edgevit.artifacts import ArtifactInfo
from edgevit.config import preset
from edgevit.preprocess import Preprocess
from edgevit.quant.calibrate import calibrate
from edgevit.quant.config import QuantizeConfig
path, n, method = sys.argv[1], int(sys.argv[2]), sys.argv[3]
cfg = preset("tiny")
info = ArtifactInfo(model_config=cfg, preprocess=Preprocess(224, 3, (0.5,) * 3, (0.25,) * 3),
                    class_names=[str(i) for i in range(cfg.num_classes)], data="random")
images = np.random.default_rng(0).integers(0, 256, size=(n, 224, 224, 3), dtype=np.uint8)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
table = calibrate(path, images, info, QuantizeConfig(method=method, num_images=n), "random", progress=False)
print(json.dumps({"seconds": time.perf_counter() - t, "rss_before_mb": before / 1024,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "tensors": len(table.tensors), "batch": table.settings.get("calibration_batch"),
                  "auto_evaluations": table.settings.get("auto_evaluations")}))
"""


def tiny_calibration(fp32: Path, num_images: int, method: str) -> dict[str, Any]:
    """Calibrate the tiny preset on ``num_images`` random 224 px images in a child process
    (no torch loaded there): its peak RSS (including the images) and wall time."""
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", TINY_CHILD, str(fp32), str(num_images), method],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed", "method": method}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out.update(num_images=num_images, method=method, process_s=time.perf_counter() - t)
    return out


def _loadavg() -> list[float]:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def _stats(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=0)), "min": float(a.min()), "max": float(a.max())}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from edgevit.sysinfo import describe_machine

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    fp32 = Path(args.model) if args.model else _train(work / "digits-nano", "digits", args.epochs)
    cases = [Case("digits", fp32, "digits"), Case("outliers", _outlier_model(fp32, work, 4, 50.0), "digits")]
    if args.folder:
        cases.append(Case("folder", _train(work / "folder-nano", args.folder, args.epochs, args.img_size), args.folder))
    names = QUICK_VARIANTS if args.quick else tuple(VARIANTS)
    num_images = 64 if args.quick else 512
    results: dict[str, Any] = {
        "machine": describe_machine(),
        "load_average_start": _loadavg(),
        "cases": {},
    }
    for case in cases:
        rows = {}
        for name in names:
            kw = dict(VARIANTS[name], num_images=num_images)
            rows[name] = evaluate(case, kw, work, f"{case.name}-{name.split(' ')[0].replace('+', '_')}")
        results["cases"][case.name] = {"model": str(case.fp32), "data": case.data, "variants": rows}
    # stability: five calibration draws, and the calibration size
    draws = 2 if args.quick else 5
    sizes = (32, 64) if args.quick else (32, 128, 512)
    for case in cases[:2]:
        for name in (
            ("percentile+smoothquant (default)",) if args.quick else ("max", "percentile+smoothquant (default)")
        ):
            drops, agree = [], []
            for seed in range(draws):
                r = evaluate(case, dict(VARIANTS[name], num_images=num_images, seed=seed + 1), work, "draw")
                drops.append(r["drop"])
                agree.append(r["agreement"])
            results["cases"][case.name].setdefault("stability", {})[name] = {
                "draws": draws,
                "drop": _stats(drops),
                "agreement": _stats(agree),
            }
            by_size = {}
            for n in sizes:
                r = evaluate(case, dict(VARIANTS[name], num_images=n), work, "size")
                by_size[str(n)] = {k: r[k] for k in ("drop", "agreement", "mean_kl", "quantize_s")}
            results["cases"][case.name].setdefault("calibration_size", {})[name] = by_size
    if not args.skip_tiny:
        tiny = export_tiny(work / "tiny.onnx")
        results["tiny_calibration"] = [tiny_calibration(tiny, 16 if args.quick else 512, "percentile")]
        if args.tiny_auto:
            results["tiny_calibration"].append(tiny_calibration(tiny, 512, "auto"))
    results["load_average_end"] = _loadavg()
    results["total_s"] = time.perf_counter() - t_start
    results["peak_rss_mb_parent"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return results


def to_markdown(res: dict[str, Any]) -> str:
    lines = [f"Machine: {res['machine']}; load average {res['load_average_start']} -> {res['load_average_end']}.", ""]
    for cname, case in res["cases"].items():
        lines += [
            f"### {cname} (`{case['data']}`)",
            "",
            "| variant | FP32 top-1 | INT8 top-1 | drop (points) | agreement | mean KL | quantize s |",
            "|---|---|---|---|---|---|---|",
        ]
        for v, r in case["variants"].items():
            lines.append(
                f"| {v} | {r['fp32_top1']:.2f}% | {r['int8_top1']:.2f}% | {r['drop']:+.2f} | {r['agreement']:.2f}% | "
                f"{r['mean_kl']:.2e} | {r['quantize_s']:.1f} |"
            )
        for v, s in case.get("stability", {}).items():
            d, a = s["drop"], s["agreement"]
            lines.append("")
            lines.append(
                f"Stability ({v}, {s['draws']} draws): drop {d['mean']:+.2f} +- {d['std']:.2f} points "
                f"(range {d['min']:+.2f}..{d['max']:+.2f}), agreement {a['mean']:.2f} +- {a['std']:.2f}%."
            )
        for v, by in case.get("calibration_size", {}).items():
            cells = ", ".join(f"{n}: drop {r['drop']:+.2f}, agreement {r['agreement']:.2f}%" for n, r in by.items())
            lines.append(f"Calibration size ({v}): {cells}.")
        lines.append("")
    for t in res.get("tiny_calibration", []):
        if "error" in t:
            lines.append(f"tiny calibration failed: {t['error']}")
            continue
        lines.append(
            f"tiny preset, {t['num_images']} images, method {t['method']}: {t['seconds']:.0f} s, peak RSS "
            f"{t['peak_rss_mb']:.0f} MB (batch {t['batch']}, {t['tensors']} tensors, "
            f"{t['rss_before_mb']:.0f} MB before calibrating)."
        )
    lines.append(f"\nTotal benchmark time {res['total_s']:.0f} s.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="FP32 ONNX of a nano digits model (default: train one)")
    p.add_argument("--folder", help="case 3: an image folder (one sub-folder per class); a nano model is trained on it")
    p.add_argument("--img-size", type=int, default=None, help="model input side for --folder")
    p.add_argument("--epochs", type=int, default=100, help="training epochs for the models trained here")
    p.add_argument("--work", default="/tmp/edgevit-bench-quant", help="scratch folder")
    p.add_argument("--out", default="benchmarks/quant_accuracy.json")
    p.add_argument("--quick", action="store_true", help="two variants, small sizes: a smoke run")
    p.add_argument("--skip-tiny", action="store_true", help="skip the tiny-preset memory/time measurement")
    p.add_argument("--tiny-auto", action="store_true", help="also time --method auto on the tiny preset")
    args = p.parse_args(argv)
    res = run(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(to_markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
