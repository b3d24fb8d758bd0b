"""ONNX in, TensorRT plan + manifest out, for TensorRT 8.5 through 11.x.

Three build modes, chosen from the running TensorRT version and the ONNX given:

* ``strongly-typed`` (TensorRT >= 10.12, the only mode of 11.x and TensorRT-RTX): every
  tensor's precision comes from the graph. INT8 from the Q/DQ ONNX; FP16 (alone, or for
  the unquantized parts of an INT8 model, ``best``) from an FP16 conversion of it.
* ``builder-flags`` (TensorRT 8.5 - 10.11): the Q/DQ (or FP32) ONNX with the FP16/INT8
  builder flags.
* ``implicit-int8`` (TensorRT 8.x - 10.x; removed in 11): the FP32 ONNX plus the calibration
  cache written by ``edgevit quantize``; nothing is calibrated on the device.

After the build the layer precisions are read back (engine inspector) and the build
fails when the engine did not get the precision asked for. Nothing is written under
``engines/`` unless everything succeeded.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import re
import shlex
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgevit.artifacts import ArtifactInfo, atomic_output, read_onnx_info, sha256_file, write_bytes_atomic
from edgevit.errors import ArtifactError, BackendError, EdgeVitError, InputError, QuantizationError, first_line
from edgevit.trt.device import DeviceInfo, check_request, detect_device
from edgevit.trt.manifest import Manifest, TensorSpec, manifest_path
from edgevit.trt.trtapi import TrtVersion, import_tensorrt, make_logger, parser_errors

PRECISIONS = ("fp32", "fp16", "int8", "best")
MODES = ("auto", "strongly-typed", "builder-flags", "implicit-int8")
DEFAULT_BATCH = (1, 8, 32)


def parse_batch(text: str) -> tuple[int, int, int]:
    """``"1:8:32"`` -> (1, 8, 32); ``"16"`` -> (1, 16, 16)."""
    parts = str(text).split(":")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        raise InputError(f"--batch {text!r} is not min:opt:max (e.g. 1:8:32) or one number") from None
    if len(nums) == 1:
        nums = [1, nums[0], nums[0]]
    if len(nums) != 3 or not (1 <= nums[0] <= nums[1] <= nums[2]):
        raise InputError(f"--batch {text!r} must be min:opt:max with 1 <= min <= opt <= max")
    return nums[0], nums[1], nums[2]


@dataclass
class BuildOptions:
    """What ``edgevit build`` was asked to do. ``precision=None`` picks ``best`` for a Q/DQ
    ONNX and ``fp16`` otherwise."""

    onnx: Path
    output: Path | None = None
    precision: str | None = None
    batch: tuple[int, int, int] = DEFAULT_BATCH
    workspace_mib: int | None = None
    opt_level: int | None = None
    timing_cache: Path | None = None
    use_timing_cache: bool = True
    dla_core: int | None = None
    calib_cache: Path | None = None  # implicit INT8: .cache (or edgevit .json table)
    calib_table: Path | None = None  # ranges for the FP16 overflow check
    mode: str = "auto"
    engines_dir: Path = Path("engines")
    fp32_ops: tuple[str, ...] = ("LayerNormalization", "Softmax")
    allow_rtx: bool = False  # accept tensorrt_rtx (CPU parse/build checks)
    prefer_rtx: bool = False
    check_qdq: bool = True

    def __post_init__(self) -> None:
        self.onnx = Path(self.onnx)
        if self.precision is not None and self.precision not in PRECISIONS:
            raise InputError(f"--precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        if self.mode not in MODES:
            raise InputError(f"--mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.workspace_mib is not None and self.workspace_mib < 16:
            raise InputError(f"--workspace must be at least 16 MiB, got {self.workspace_mib}")
        if self.opt_level is not None and not 0 <= self.opt_level <= 5:
            raise InputError(f"--opt-level must be 0..5, got {self.opt_level}")


@dataclass
class BuildPlan:
    """How the build will go; decided before TensorRT parses anything."""

    precision: str
    mode: str  # strongly-typed / builder-flags / implicit-int8
    builder_flags: list[str]  # "FP16", "INT8"
    convert_fp16: bool
    source_is_qdq: bool
    notes: list[str] = field(default_factory=list)

    @property
    def strongly_typed(self) -> bool:
        return self.mode == "strongly-typed"


def plan_build(
    precision: str | None, source_is_qdq: bool, version: TrtVersion, calib_cache: bool, mode: str = "auto"
) -> BuildPlan:
    """Pick the build mode for this TensorRT and ONNX, or refuse a combination that cannot work."""
    precision = precision or ("best" if source_is_qdq else "fp16")
    notes: list[str] = []
    if source_is_qdq and calib_cache:
        raise InputError(
            "--calib-cache is for the FP32 ONNX (implicit INT8); this ONNX already has Q/DQ nodes, drop it"
        )
    if source_is_qdq and precision in ("fp32", "fp16"):
        raise InputError(
            f"this ONNX is INT8 (Q/DQ): it cannot give an {precision} engine; "
            f"build the FP32 ONNX with --precision {precision}"
        )
    implicit = precision in ("int8", "best") and not source_is_qdq
    if implicit:
        if not calib_cache:
            raise InputError(
                f"--precision {precision} from an FP32 ONNX needs --calib-cache (implicit INT8, TensorRT < 11); "
                "or pass the INT8 Q/DQ ONNX from `edgevit quantize`"
            )
        if not version.has_implicit_int8:
            raise InputError(
                f"{version} has no implicit INT8 (calibration caches were removed in TensorRT 11); "
                "build the INT8 Q/DQ ONNX from `edgevit quantize` instead"
            )
        if mode not in ("auto", "implicit-int8"):
            raise InputError(f"--mode {mode} cannot use a calibration cache; use --mode implicit-int8 or auto")
        if version.major >= 10:
            notes.append("implicit INT8 is deprecated since TensorRT 10.1; prefer the Q/DQ ONNX")
        flags = ["INT8"] + (["FP16"] if precision == "best" else [])
        return BuildPlan(precision, "implicit-int8", flags, False, False, notes)
    if calib_cache:
        raise InputError(f"--calib-cache is only used for --precision int8/best from the FP32 ONNX, not {precision}")
    if mode == "implicit-int8":
        raise InputError("--mode implicit-int8 needs the FP32 ONNX, --precision int8/best and --calib-cache")
    if mode == "auto":
        mode = "strongly-typed" if version.prefers_strongly_typed else "builder-flags"
    if mode == "strongly-typed" and not version.has_strongly_typed:
        raise InputError(f"{version} has no strongly typed networks (TensorRT 10+); use --mode builder-flags")
    if mode == "builder-flags" and version.strongly_typed_only:
        raise InputError(
            f"{version} has no precision builder flags (removed in TensorRT 11); use --mode strongly-typed"
        )
    if mode == "strongly-typed":
        return BuildPlan(precision, mode, [], precision in ("fp16", "best"), source_is_qdq, notes)
    flags = {"fp32": [], "fp16": ["FP16"], "int8": ["INT8"], "best": ["INT8", "FP16"]}[precision]
    return BuildPlan(precision, mode, flags, False, source_is_qdq, notes)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "gpu"


def default_output(opts: BuildOptions, precision: str) -> Path:
    stem = opts.onnx.stem
    dla = f".dla{opts.dla_core}" if opts.dla_core is not None else ""
    return opts.engines_dir / f"{stem}.{precision}{dla}.engine"


def default_timing_cache(engines_dir: Path, version: TrtVersion, device: DeviceInfo) -> Path:
    return (
        engines_dir / "timing" / f"trt{version.text or '.'.join(map(str, version.tuple))}-{_slug(device.gpu_name)}"
        f"-sm{device.compute_capability}.cache"
    )


def rebuild_command(opts: BuildOptions, precision: str, output: Path) -> str:
    parts = ["edgevit", "build", str(opts.onnx), "--precision", precision, "--batch", ":".join(map(str, opts.batch))]
    if opts.workspace_mib:
        parts += ["--workspace", str(opts.workspace_mib)]
    if opts.opt_level is not None:
        parts += ["--opt-level", str(opts.opt_level)]
    if opts.dla_core is not None:
        parts += ["--dla-core", str(opts.dla_core)]
    if opts.calib_cache:
        parts += ["--calib-cache", str(opts.calib_cache)]
    parts += ["-o", str(output)]
    return shlex.join(parts)


def trtexec_command(
    plan: BuildPlan,
    onnx: Path,
    output: Path,
    input_name: str,
    chw: tuple[int, int, int],
    opts: BuildOptions,
    calib_cache: Path | None = None,
    timing_cache: Path | None = None,
) -> str:
    """The trtexec command line equivalent to this build."""

    def shape(n: int) -> str:
        return f"{input_name}:{n}x" + "x".join(map(str, chw))

    b = opts.batch
    parts = [
        "trtexec",
        f"--onnx={onnx}",
        f"--saveEngine={output}",
        f"--minShapes={shape(b[0])}",
        f"--optShapes={shape(b[1])}",
        f"--maxShapes={shape(b[2])}",
    ]
    if plan.strongly_typed:
        parts.append("--stronglyTyped")
    parts += [f"--{f.lower()}" for f in plan.builder_flags]
    if calib_cache is not None:
        parts.append(f"--calib={calib_cache}")
    if opts.workspace_mib:
        parts.append(f"--memPoolSize=workspace:{opts.workspace_mib}")
    if opts.opt_level is not None:
        parts.append(f"--builderOptimizationLevel={opts.opt_level}")
    if timing_cache is not None:
        parts.append(f"--timingCacheFile={timing_cache}")
    if opts.dla_core is not None:
        parts += [f"--useDLACore={opts.dla_core}", "--allowGPUFallback"]
    parts.append("--profilingVerbosity=detailed")
    return shlex.join(parts)


@dataclass
class BuildResult:
    engine: Path | None  # None for a parse/build check that wrote nothing
    manifest: Manifest | None
    plan: BuildPlan
    plan_bytes: int
    seconds: float
    warnings: list[str] = field(default_factory=list)
    trtexec: str = ""


def _source_kind(opts: BuildOptions) -> tuple[ArtifactInfo, bool]:
    if not opts.onnx.is_file():
        raise ArtifactError(f"ONNX model {opts.onnx} does not exist")
    info = read_onnx_info(opts.onnx)
    try:
        import onnx
    except ImportError:  # a device without the onnx package: trust the metadata, skip the static check
        return info, info.precision == "int8"
    from edgevit.quant.rules import check_qdq_graph, summarize_qdq

    try:
        model = onnx.load(str(opts.onnx), load_external_data=False)
    except Exception as exc:
        raise ArtifactError(f"{opts.onnx} is not a readable ONNX model ({first_line(exc)}); re-export it") from exc
    is_qdq = summarize_qdq(model)["dequantize_nodes"] > 0
    if is_qdq and opts.check_qdq:
        problems = check_qdq_graph(model)
        if problems:
            more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
            raise QuantizationError(
                f"{opts.onnx} breaks TensorRT's Q/DQ rules: {'; '.join(problems[:3])}{more}; re-run `edgevit quantize`"
            )
    return info, is_qdq


def _ranges_from_table(path: Path | None) -> dict[str, float] | None:
    if path is None:
        return None
    from edgevit.quant.table import CalibrationTable

    table = CalibrationTable.load(path)
    return {name: max(abs(r.min), abs(r.max), abs(r.amax)) for name, r in table.tensors.items()}


def prepare_onnx(opts: BuildOptions, plan: BuildPlan, output: Path) -> tuple[Path, dict[str, Any]]:
    """The ONNX TensorRT parses: the source, or its FP16 conversion (written beside the engine)."""
    if not plan.convert_fp16:
        return opts.onnx, {}
    from edgevit.engine.fp16 import convert_file

    dst = output.with_name(output.stem + ".fp16.onnx")  # beside the engine
    report = convert_file(opts.onnx, dst, fp32_ops=opts.fp32_ops, ranges=_ranges_from_table(opts.calib_table))
    return dst, report.to_dict()


def _np_dtype_name(trt: Any, dtype: Any) -> str:
    try:
        import numpy as np

        return str(np.dtype(trt.nptype(dtype)))
    except Exception:
        return str(dtype).split(".")[-1].lower()


def print_trtexec(opts: BuildOptions, trt_version: str | None = None) -> str:
    """The trtexec command equivalent to ``edgevit build`` with ``opts``, for the running
    TensorRT or for ``trt_version`` (the device's) when TensorRT is not installed here.

    Prepares what the command reads: the FP16 ONNX (strongly typed FP16/best) and, for implicit
    INT8, a copy of the calibration cache whose header names the target TensorRT version.
    Builds nothing.
    """
    info, is_qdq = _source_kind(opts)
    if trt_version:
        version = TrtVersion.parse(trt_version)
    else:
        try:
            _, version = import_tensorrt()
        except BackendError:
            raise InputError(
                "TensorRT is not installed here: give the device's version with --trt-version "
                "(8.5.2 on JetPack 5.1, 10.3.0 on JetPack 6.1/6.2, 10.13.0 on JetPack 7)"
            ) from None
    plan = plan_build(opts.precision, is_qdq, version, opts.calib_cache is not None, opts.mode)
    output = opts.output or default_output(opts, plan.precision)
    parse_path, _ = prepare_onnx(opts, plan, output)
    calib = None
    if plan.mode == "implicit-int8":
        from edgevit.engine.calibrator import cache_for_version

        calib = output.with_name(output.stem + ".calib.cache")
        write_bytes_atomic(calib, cache_for_version(Path(str(opts.calib_cache)), version.calib_tag))
    timing = None
    if opts.use_timing_cache:
        timing = opts.timing_cache or opts.engines_dir / "timing" / f"trt{version.text}.cache"
    import onnxruntime as ort

    sess = ort.InferenceSession(str(opts.onnx), providers=["CPUExecutionProvider"])
    input_name = sess.get_inputs()[0].name
    chw = info.preprocess.input_shape
    return trtexec_command(plan, parse_path, output, input_name, chw, opts, calib_cache=calib, timing_cache=timing)


def build_engine(opts: BuildOptions, write: bool = True) -> BuildResult:
    """Build ``opts.onnx`` into a plan; write the plan and its manifest when ``write``.

    Raises:
        ArtifactError: the ONNX is missing, unreadable, or rejected by TensorRT's parser
            (the message lists the parser's errors node by node).
        BackendError: TensorRT/CUDA missing, the device cannot do what was asked, the build
            failed, or the engine lacks the requested precision.
        InputError: an impossible combination of options.
    """
    info, is_qdq = _source_kind(opts)
    trt, version = import_tensorrt(allow_rtx=opts.allow_rtx, prefer_rtx=opts.prefer_rtx)
    plan = plan_build(opts.precision, is_qdq, version, opts.calib_cache is not None, opts.mode)
    logger = make_logger(trt)

    try:
        builder = trt.Builder(logger.trt_logger)
    except Exception as exc:
        raise BackendError(
            f"{version} could not start ({first_line(exc)}); is a CUDA GPU present and the driver loaded?"
        ) from exc
    if builder is None:  # pragma: no cover - some versions return None instead of raising
        raise BackendError(f"{version} could not create a builder ({logger.last_error() or 'no CUDA device?'})")

    device = _device_for(version, builder)
    if not version.is_rtx:
        check_request(device, plan.precision, opts.dla_core, version)
    elif opts.dla_core is not None:
        raise InputError("TensorRT-RTX has no DLA; drop --dla-core")

    output = opts.output or default_output(opts, plan.precision)
    if output.suffix not in (".engine", ".plan"):
        raise InputError(f"engine path {output} must end in .engine or .plan")
    timing_path = None
    if opts.use_timing_cache and not version.is_rtx:  # TensorRT-RTX: timing-cache calls are no-ops
        timing_path = opts.timing_cache or default_timing_cache(opts.engines_dir, version, device)

    calib_bytes = None
    if plan.mode == "implicit-int8":
        from edgevit.engine.calibrator import cache_for_version

        calib_bytes = cache_for_version(Path(str(opts.calib_cache)), version.calib_tag)  # set: plan_build checked

    # The FP16 conversion goes to a scratch folder; it joins the engine under engines/ only on success.
    scratch = contextlib.ExitStack()
    tmp = Path(scratch.enter_context(tempfile.TemporaryDirectory(prefix="edgevit-build-")))
    parse_path, fp16_report = prepare_onnx(opts, plan, tmp / output.name)
    with scratch:
        return _build_network(
            trt,
            version,
            logger,
            builder,
            device,
            opts,
            plan,
            info,
            output,
            parse_path,
            fp16_report,
            timing_path,
            calib_bytes,
            write,
        )


def _build_network(
    trt: Any,
    version: TrtVersion,
    logger: Any,
    builder: Any,
    device: DeviceInfo,
    opts: BuildOptions,
    plan: BuildPlan,
    info: ArtifactInfo,
    output: Path,
    parse_path: Path,
    fp16_report: dict[str, Any],
    timing_path: Path | None,
    calib_bytes: bytes | None,
    write: bool,
) -> BuildResult:

    # -- network -----------------------------------------------------------------------------------
    flags = 0
    if plan.strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    elif version.major < 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)  # required before 10, ignored after
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger.trt_logger)
    if not parser.parse_from_file(str(parse_path)):
        errs = parser_errors(parser, logger)
        shown = "; ".join(str(e) for e in errs[:5]) or logger.last_error() or "no details"
        more = f" (+{len(errs) - 5} more)" if len(errs) > 5 else ""
        raise ArtifactError(f"TensorRT's ONNX parser ({version}) rejected {parse_path}: {shown}{more}")
    if network.num_inputs != 1:
        raise ArtifactError(f"{opts.onnx} has {network.num_inputs} inputs; an edgevit classifier has exactly one")
    inp = network.get_input(0)
    dims = tuple(int(d) for d in inp.shape)
    if len(dims) != 4 or any(d < 0 for d in dims[1:]):
        raise ArtifactError(f"{opts.onnx} input {inp.name} has shape {dims}; expected N x C x H x W with a dynamic N")
    chw = (dims[1], dims[2], dims[3])
    if dims[0] >= 0 and opts.batch != (dims[0],) * 3:
        raise ArtifactError(f"{opts.onnx} has a fixed batch of {dims[0]}; re-export it with a dynamic batch axis")

    # -- config ------------------------------------------------------------------------------------
    config = builder.create_builder_config()
    if opts.workspace_mib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(opts.workspace_mib) << 20)
    if opts.opt_level is not None:
        if not hasattr(config, "builder_optimization_level"):
            raise InputError(f"{version} has no builder optimization level (TensorRT 8.6+); drop --opt-level")
        config.builder_optimization_level = int(opts.opt_level)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    for flag in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    profile = builder.create_optimization_profile()
    b = opts.batch
    profile.set_shape(inp.name, (b[0], *chw), (b[1], *chw), (b[2], *chw))
    config.add_optimization_profile(profile)
    calibrator = None
    if calib_bytes is not None:
        from edgevit.engine.calibrator import make_cache_calibrator

        calibrator = make_cache_calibrator(trt, calib_bytes, batch_size=b[1])
        config.int8_calibrator = calibrator
        config.set_calibration_profile(profile)
    if opts.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(opts.dla_core)
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    timing = None
    if timing_path is not None:
        blob = timing_path.read_bytes() if timing_path.is_file() else b""
        timing = config.create_timing_cache(blob)
        if timing is None or not config.set_timing_cache(timing, ignore_mismatch=False):
            timing = config.create_timing_cache(b"")  # stale or foreign cache: start a fresh one
            config.set_timing_cache(timing, ignore_mismatch=False)

    trtexec = trtexec_command(
        plan,
        parse_path,
        output,
        inp.name,
        chw,
        opts,
        calib_cache=opts.calib_cache if plan.mode == "implicit-int8" else None,
        timing_cache=timing_path,
    )

    # -- build -------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - t0
    if serialized is None:
        raise BackendError(f"{version} failed to build {parse_path}: {logger.last_error() or 'no error message'}")
    if calibrator is not None and calibrator.batches_requested:
        raise BackendError(
            f"TensorRT rejected the calibration cache {opts.calib_cache} and asked for calibration data; "
            "regenerate it with `edgevit quantize` for this FP32 ONNX"
        )
    plan_bytes = bytes(serialized)

    # -- read back ---------------------------------------------------------------------------------
    io, layer_summary, precision_check = _inspect(trt, version, logger, plan_bytes, network, plan)
    if not write:
        return BuildResult(None, None, plan, len(plan_bytes), seconds, logger.warnings() + plan.notes, trtexec)

    from edgevit import __version__

    kept_onnx = output.with_name(parse_path.name) if parse_path != opts.onnx else opts.onnx

    artifact = ArtifactInfo(
        model_config=info.model_config,
        preprocess=info.preprocess,
        class_names=list(info.class_names),
        precision=plan.precision,
        source_sha256=sha256_file(opts.onnx),
        data=info.data,
        extra={**info.extra, "source_precision": info.precision},
    )
    manifest = Manifest(
        engine_file=output.name,
        engine_sha256=_sha256_bytes(plan_bytes),
        engine_bytes=len(plan_bytes),
        tensorrt_version=version.text,
        tensorrt_module=version.module,
        device=device,
        precision=plan.precision,
        build_mode=plan.mode,
        profile={"min": [b[0], *chw], "opt": [b[1], *chw], "max": [b[2], *chw]},
        io=io,
        source_onnx=str(opts.onnx),
        source_sha256=artifact.source_sha256,
        artifact=artifact,
        built_from=str(kept_onnx),
        calib_cache=str(opts.calib_cache or ""),
        dla_core=opts.dla_core,
        build_seconds=round(seconds, 3),
        built_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        settings={
            "workspace_mib": opts.workspace_mib,
            "opt_level": opts.opt_level,
            "timing_cache": str(timing_path or ""),
            "fp32_ops": list(opts.fp32_ops) if plan.convert_fp16 else [],
            "builder_flags": plan.builder_flags,
            "notes": plan.notes,
        },
        layer_precisions=layer_summary,
        precision_check=precision_check,
        fp16_conversion=fp16_report,
        rebuild_command=rebuild_command(opts, plan.precision, output),
        edgevit_version=__version__,
    )
    with contextlib.ExitStack() as outputs:
        tmp_engine = outputs.enter_context(atomic_output(output))
        tmp_manifest = outputs.enter_context(atomic_output(manifest_path(output)))
        if kept_onnx != parse_path:
            shutil.copyfile(parse_path, outputs.enter_context(atomic_output(kept_onnx)))
        tmp_engine.write_bytes(plan_bytes)
        manifest.save(tmp_manifest)
    if timing is not None and timing_path is not None:
        with contextlib.suppress(OSError):  # a cache we cannot save only costs time next build
            write_bytes_atomic(timing_path, bytes(config.get_timing_cache().serialize()))
    return BuildResult(output, manifest, plan, len(plan_bytes), seconds, logger.warnings() + plan.notes, trtexec)


def _sha256_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _device_for(version: TrtVersion, builder: Any) -> DeviceInfo:
    if version.is_rtx:
        try:
            return detect_device()
        except EdgeVitError:
            return DeviceInfo(gpu_name="none (TensorRT-RTX build check on CPU)", compute_capability="0.0")
    device = detect_device()
    cores = getattr(builder, "num_DLA_cores", None)
    if cores is not None:
        device = DeviceInfo(device.gpu_name, device.compute_capability, device.jetson, device.cuda_runtime, int(cores))
    return device


def _inspect(
    trt: Any, version: TrtVersion, logger: Any, plan_bytes: bytes, network: Any, plan: BuildPlan
) -> tuple[list[TensorSpec], dict[str, Any], str]:
    """I/O specs and layer precisions from the deserialized engine (TensorRT), or from the
    network where the engine cannot be deserialized (TensorRT-RTX without a GPU)."""
    from edgevit.engine.inspect import check_precision, summarize

    if version.is_rtx:
        io = [
            TensorSpec(t.name, mode, [int(d) for d in t.shape], _np_dtype_name(trt, t.dtype))
            for mode, ts in (
                ("input", [network.get_input(i) for i in range(network.num_inputs)]),
                ("output", [network.get_output(i) for i in range(network.num_outputs)]),
            )
            for t in ts
        ]
        return io, {}, "not checked: TensorRT-RTX cannot deserialize a plan without a GPU"
    runtime = trt.Runtime(logger.trt_logger)
    engine = runtime.deserialize_cuda_engine(plan_bytes)
    if engine is None:
        raise BackendError(f"the freshly built plan does not deserialize: {logger.last_error() or 'no message'}")
    io = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        mode = "input" if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "output"
        io.append(
            TensorSpec(
                name,
                mode,
                [int(d) for d in engine.get_tensor_shape(name)],
                _np_dtype_name(trt, engine.get_tensor_dtype(name)),
            )
        )
    inspector = engine.create_engine_inspector()
    summary = summarize(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    verified = check_precision(summary, plan.precision, plan.strongly_typed)
    return io, summary, verified
