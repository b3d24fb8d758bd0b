"""``edgevit <command>``: the command line.

Library code raises :class:`~edgevit.errors.EdgeVitError`; here it becomes one line on
stderr and exit code 2 (a failed validation gate exits with 1). Commands that only run
models (``validate``, ``predict``, ``info``, ``camera``, ``build``) never import torch.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from edgevit import __version__
from edgevit.errors import EdgeVitError, GateError
from edgevit.options import add_output, add_quiet, add_switch, add_top_k

COMMAND_MODULES = (
    "edgevit.importer.cli",  # import
    "edgevit.engine.cli",  # build
    "edgevit.stream.cli",  # camera
    "edgevit.bench.cli",  # bench
    "edgevit.serve.cli",  # serve, export-triton
    "edgevit.inspect_layers",  # inspect (per-layer quantization error report)
)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- train ---------------------------------------------------------------------------
def _add_train_args(p: argparse.ArgumentParser) -> None:
    from edgevit.config import FINETUNE_DEFAULTS, TrainConfig

    d = TrainConfig()
    p.add_argument("--data", default=d.data, help="'digits' (built in) or an image folder, one sub-folder per class")
    p.add_argument("--preset", default=d.preset, help="model size: nano (8-32 px) or tiny (DeiT-Tiny, 224 px)")
    p.add_argument(
        "--img-size",
        type=int,
        default=None,
        help="model input side (default: nano: the data's side up to 16 px; tiny: 224; with --init: the weights')",
    )
    p.add_argument(
        "--channels",
        type=int,
        choices=(1, 3),
        default=d.channels,
        help="model input channels (default: the data's; grayscale folders give 1-channel models)",
    )
    p.add_argument(
        "--epochs", type=int, default=None, help=f"default {d.epochs} ({FINETUNE_DEFAULTS['epochs']} with --init)"
    )
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=None, help=f"default {d.lr:g} ({FINETUNE_DEFAULTS['lr']:g} with --init)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument(
        "--warmup-epochs",
        type=int,
        default=None,
        help=f"default {d.warmup_epochs} ({FINETUNE_DEFAULTS['warmup_epochs']} with --init)",
    )
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    p.add_argument("--no-augment", action="store_true", help="turn off random shifts")
    p.add_argument("--hflip", action="store_true", help="random horizontal flips (photos, not digits or text)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--workers", type=int, default=None, help="image-folder loader processes (default: up to 4)")
    p.add_argument(
        "--init",
        help="start from these weights: an edgevit checkpoint, or timm/DeiT/Hugging Face weights as `import` reads them",
    )
    p.add_argument("--num-heads", type=int, help="attention heads of bare timm weights given to --init")
    p.add_argument("--arch", help="timm model name of the --init weights (gives the heads)")
    p.add_argument("--freeze-backbone", action="store_true", help="train only the head (a linear probe); needs --init")


def _train_config(args: argparse.Namespace):
    from edgevit.config import TrainConfig

    given = {
        k: v
        for k, v in (("epochs", args.epochs), ("lr", args.lr), ("warmup_epochs", args.warmup_epochs))
        if v is not None
    }
    common = dict(
        data=args.data,
        preset=args.preset,
        img_size=args.img_size,
        channels=args.channels,
        batch_size=args.batch_size,
        weight_decay=args.weight_decay,
        label_smoothing=args.label_smoothing,
        augment=not args.no_augment,
        hflip=args.hflip,
        seed=args.seed,
        threads=args.threads,
        workers=getattr(args, "workers", None),
        init_num_heads=getattr(args, "num_heads", None),
        init_arch=getattr(args, "arch", None),
        freeze_backbone=getattr(args, "freeze_backbone", False),
        **given,
    )
    init = getattr(args, "init", None)
    if init:
        return TrainConfig.finetuning(init, **common)
    return TrainConfig(**common)


def cmd_train(args: argparse.Namespace) -> int:
    from edgevit.train import train

    name = f"{Path(str(args.data)).name}-{'finetune' if args.init else args.preset}"
    out = Path(args.out or f"runs/{name}")
    result = train(
        _train_config(args), out, resume=args.resume, progress=not args.quiet, note=None if args.quiet else _say
    )
    m = result.metrics
    print(
        f"best epoch {m['best_epoch'] + 1}: val top-1 {100 * m['val_acc']:.2f}%, test top-1 {100 * m['test_acc']:.2f}% "
        f"({m['train_time_s']:.0f} s) -> {result.checkpoint}"
    )
    return 0


# -- export / quantize ---------------------------------------------------------------
def cmd_export(args: argparse.Namespace) -> int:
    from edgevit.export import export_onnx

    ckpt = Path(args.checkpoint)
    out = Path(args.output) if args.output else ckpt.with_name("model.onnx")
    r = export_onnx(ckpt, out, opset=args.opset, data=args.data, tolerance=args.tolerance)
    print(
        f"{r.path}: opset {r.opset}, ONNX Runtime vs PyTorch max abs logit diff {r.max_abs_diff:.2e} on {r.num_images} images"
    )
    return 0


def _add_quant_args(p: argparse.ArgumentParser) -> None:
    from edgevit.quant.config import METHODS, QuantizeConfig

    d = QuantizeConfig()
    p.add_argument(
        "--method",
        choices=METHODS,
        default=d.method,
        help="calibration range method; auto picks per tensor the bound that least changes the output",
    )
    p.add_argument("--percentile", type=float, default=d.percentile, help="for --method percentile")
    p.add_argument("--num-images", type=int, default=d.num_images, help="calibration images from the training split")
    p.add_argument("--calib-seed", type=int, default=d.seed, help="which training images calibrate")
    add_switch(
        p,
        "int8-attention",
        d.int8_attention,
        "also quantize the attention batch matmuls (Q.K^T, softmax.V); otherwise they stay in floating point",
    )
    p.add_argument("--calib-dir", default="calib", help="where calibration tables and TensorRT caches go")
    add_switch(
        p,
        "smoothquant",
        d.smoothquant,
        "fold SmoothQuant scales into the LayerNorm -> Linear pairs (FP32 function unchanged)",
    )
    p.add_argument("--smoothquant-alpha", type=float, default=d.smoothquant_alpha, help="migration strength, 0..1")
    add_switch(
        p, "bias-correction", d.bias_correction, "subtract the expected output shift of INT8 weights from the biases"
    )
    p.add_argument(
        "--budget",
        type=float,
        default=d.budget,
        help="largest top-1 drop (points, held-out training images); sensitive layers fall back to FP16",
    )
    p.add_argument(
        "--budget-agreement",
        type=float,
        default=d.min_agreement,
        help="smallest top-1 agreement (percent) the fallback must keep",
    )
    p.add_argument("--holdout-images", type=int, default=d.holdout_images, help="held-out images for the scan")


def _quant_config(args: argparse.Namespace):
    from edgevit.quant.config import QuantizeConfig

    return QuantizeConfig(
        method=args.method,
        percentile=args.percentile,
        num_images=args.num_images,
        seed=args.calib_seed,
        smoothquant=args.smoothquant,
        smoothquant_alpha=args.smoothquant_alpha,
        bias_correction=args.bias_correction,
        budget=args.budget,
        min_agreement=args.budget_agreement,
        holdout_images=args.holdout_images,
        int8_attention=args.int8_attention,
    )


def cmd_quantize(args: argparse.Namespace) -> int:
    from edgevit.quant.quantize import quantize_onnx

    r = quantize_onnx(
        args.model,
        args.output,
        _quant_config(args),
        calib_dir=args.calib_dir,
        data=args.data,
        calib_table=args.calib_table,
        progress=not args.quiet,
    )
    s = r.summary
    extras = [t for t in ("smoothquant", "bias_correction") if t in r.table.transforms]
    if r.table.settings.get("attention") == "float":
        extras.append("attention in float")
    print(
        f"{r.path}: {s['quantized_ops']}/{s['weighted_ops']} MatMul/Gemm/Conv in INT8 "
        f"({r.table.method}{', ' + ', '.join(extras) if extras else ''}, {r.table.num_images} images); "
        f"table {r.table_path}, TensorRT cache {r.cache_path}"
    )
    sens = r.table.sensitivity
    if sens is not None:
        res = sens["result"]
        print(
            f"sensitivity scan on {sens['images']} held-out images: all-INT8 drop {sens['int8']['drop']:.2f} points; "
            f"{len(r.table.float_layers)} layer(s) in floating point -> drop {res['drop']:.2f} points, "
            f"agreement {res['agreement']:.2f}%"
            + (": " + ", ".join(r.table.float_layers) if r.table.float_layers else "")
        )
    if not r.budget_met:
        raise GateError(r.message)
    return 0


# -- validate / predict / info -----------------------------------------------------------
def cmd_validate(args: argparse.Namespace) -> int:
    from edgevit import runtime
    from edgevit.data import load_dataset
    from edgevit.runtime.cli_args import load_from_args
    from edgevit.validate import validate

    with runtime.load(args.reference) as ref, load_from_args(args.candidate, args) as cand:
        source = args.data or ref.info.data
        if not source:
            raise EdgeVitError(f"{args.reference} does not say which data it was trained on; pass --data DIR")
        ds = load_dataset(source, preprocess=ref.info.preprocess)
        split = ds.split(args.split)
        images, labels = split.images, split.labels
        if args.limit:
            images, labels = images[: args.limit], labels[: args.limit]
        report = validate(
            ref,
            cand,
            images,
            labels,
            f"{ds.source}:{args.split}",
            max_drop=args.max_drop,
            min_agreement=args.min_agreement,
        )
    out_dir = Path(args.out) if args.out else Path(args.candidate).parent
    json_path, md_path = report.save(out_dir, stem=args.stem)
    print(report.to_markdown() if not args.quiet else "", end="")
    print(f"report: {md_path} and {json_path}")
    if not report.passed:
        raise GateError("validation failed: " + "; ".join(report.failures))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from edgevit.preprocess import read_image
    from edgevit.runtime.cli_args import load_from_args

    with load_from_args(args.model, args) as model:
        images = [read_image(p, model.preprocess.channels) for p in args.images]
        pred = model.predict(images, top_k=args.top_k)
    for path, rec in zip(args.images, pred.to_records()):
        if args.json:
            print(json.dumps({"image": path, **rec}))
        else:
            tops = ", ".join(f"{t['label']} {100 * t['prob']:.1f}%" for t in rec["top_k"])
            print(f"{path}: {tops}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from edgevit.artifacts import read_onnx_info

    print(json.dumps(read_onnx_info(args.artifact).to_json_dict(), indent=2))
    return 0


# -- pipeline ------------------------------------------------------------------------------
def cmd_pipeline(args: argparse.Namespace) -> int:
    from edgevit.pipeline import run_pipeline

    out = Path(args.out or f"runs/{Path(str(args.data)).name}-{args.preset}")
    result = run_pipeline(
        out,
        _train_config(args),
        _quant_config(args),
        calib_dir=args.calib_dir,
        max_drop=args.max_drop,
        min_agreement=args.min_agreement,
        progress=not args.quiet,
        log=None if args.quiet else _say,
    )
    print(result.table())
    print(f"artifacts in {result.run_dir} (summary.json, validation.md, training_curve.png)")
    if not result.summary["passed"]:
        raise GateError("pipeline validation failed: " + "; ".join(result.summary["failures"]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from edgevit.runtime.cli_args import add_runtime_args  # no torch: runtime only

    parser = argparse.ArgumentParser(
        prog="edgevit", description="A Vision Transformer from training to INT8 inference on edge devices."
    )
    parser.add_argument("--version", action="version", version=f"edgevit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("pipeline", help="train -> export -> quantize -> validate on the built-in data, with a summary")
    _add_train_args(p)
    _add_quant_args(p)
    p.add_argument("--out", help="run folder (default runs/<data>-<preset>)")
    p.add_argument("--max-drop", type=float, default=1.0)
    p.add_argument("--min-agreement", type=float, default=98.0)
    add_quiet(p)
    p.set_defaults(func=cmd_pipeline)

    p = sub.add_parser("train", help="train a ViT classifier")
    _add_train_args(p)
    p.add_argument("--out", help="run folder (default runs/<data>-<preset>)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    add_quiet(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("export", help="checkpoint -> FP32 ONNX, verified against PyTorch")
    p.add_argument("checkpoint")
    add_output(p, "ONNX path (default: model.onnx next to the checkpoint)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--data", help="verification images (default: the training data)")
    p.add_argument("--tolerance", type=float, default=1e-3, help="largest allowed abs logit difference")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("quantize", help="FP32 ONNX -> INT8 Q/DQ ONNX + calibration table + TensorRT cache")
    p.add_argument("model")
    add_output(p, "INT8 path (default: <model>.int8.onnx)")
    _add_quant_args(p)
    p.add_argument("--calib-table", help="reuse this calibration table instead of calibrating")
    p.add_argument("--data", help="calibration images (default: the training data)")
    add_quiet(p)
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("validate", help="compare a candidate (INT8) with a reference (FP32) on held-out images")
    p.add_argument("reference")
    p.add_argument("candidate")
    p.add_argument("--data", help="images (default: the data the reference was trained on)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--limit", type=int, default=None, help="use only the first N images")
    p.add_argument("--max-drop", type=float, default=1.0, help="gate: largest top-1 drop in points")
    p.add_argument("--min-agreement", type=float, default=98.0, help="gate: smallest top-1 agreement in percent")
    p.add_argument("--out", help="report folder (default: the candidate's folder)")
    p.add_argument("--stem", default="validation", help="report file name stem")
    add_runtime_args(p, what="the candidate (the reference runs on ONNX Runtime's CPU default)")
    add_quiet(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("predict", help="classify image files")
    p.add_argument("model")
    p.add_argument("images", nargs="+")
    add_top_k(p)
    add_runtime_args(p)
    p.add_argument("--json", action="store_true", help="one JSON line per image")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("info", help="print an ONNX artifact's edgevit metadata")
    p.add_argument("artifact")
    p.set_defaults(func=cmd_info)

    # Commands living next to their code; each module has register(subparsers).
    for module in COMMAND_MODULES:
        try:
            register = importlib.import_module(module).register
        except ModuleNotFoundError as exc:
            if not (exc.name and (module == exc.name or module.startswith(exc.name + "."))):
                # a dependency missing inside an existing module is a real bug: surface it
                raise
            continue
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except GateError as exc:
        print(f"edgevit: {exc}", file=sys.stderr)
        return 1
    except EdgeVitError as exc:
        print(f"edgevit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgevit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
