"""ONNX in, TensorRT engine + manifest out, for TensorRT 8.5 through 11.x.

The steps, each in its own module: the build mode (:mod:`~edgevit.engine.modes`), every path
(:mod:`~edgevit.engine.paths`), the ONNX TensorRT parses (:mod:`~edgevit.engine.prepare`),
network and config (:mod:`~edgevit.engine.network`), and the read-back of layer precisions
and DLA placement (:mod:`~edgevit.engine.inspect`). The build fails when the engine did not
get the precision asked for, or when a DLA build put nothing on the DLA. Nothing is written
under ``engines/`` unless everything succeeded.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import shlex
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgevit.artifacts import ArtifactInfo, atomic_output, sha256_file, write_bytes_atomic
from edgevit.engine.inspect import LOG_MARKERS, check_precision, dla_from_log, summarize
from edgevit.engine.modes import BuildSetup, choose_setup
from edgevit.engine.network import Configured, Network, NetworkJob, configure, parse_network
from edgevit.engine.options import BuildOptions
from edgevit.engine.paths import BuildPaths, resolve_paths
from edgevit.engine.prepare import prepare_onnx, source_kind
from edgevit.engine.trtexec import trtexec_command
from edgevit.errors import BackendError, EdgeVitError, InputError, first_line
from edgevit.trt.device import DeviceInfo, check_request, detect_device
from edgevit.trt.manifest import Manifest, TensorSpec
from edgevit.trt.trtapi import CHECK_HINT, DEVICE_HINT, TrtVersion, import_tensorrt, make_logger


@dataclass
class BuildResult:
    engine: Path | None  # None for a parse/build check that wrote nothing
    manifest: Manifest | None
    setup: BuildSetup
    engine_size: int  # bytes of the serialized engine
    seconds: float
    warnings: list[str] = field(default_factory=list)
    dla: dict[str, Any] = field(default_factory=dict)
    version: TrtVersion | None = None


def rebuild_command(opts: BuildOptions, precision: str, output: Path) -> str:
    b = opts.batch_profile
    parts = ["edgevit", "build", str(opts.onnx), "--precision", precision, "--batch-profile", f"{b[0]}:{b[1]}:{b[2]}"]
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


def build_engine(opts: BuildOptions, write: bool = True) -> BuildResult:
    """Build ``opts.onnx`` into a TensorRT engine; write it and its manifest when ``write``.

    Raises:
        ArtifactError: the ONNX is missing, unreadable, or rejected by TensorRT's parser
            (the message lists the parser's errors node by node).
        BackendError: TensorRT/CUDA missing, the device cannot do what was asked, the build
            failed, the engine lacks the requested precision, or a DLA build runs nothing on DLA.
        InputError: an impossible combination of options.
    """
    info, is_qdq = source_kind(opts)
    trt, version = import_tensorrt(
        allow_rtx=opts.allow_rtx, prefer_rtx=opts.prefer_rtx, hint=CHECK_HINT if opts.allow_rtx else DEVICE_HINT
    )
    setup = choose_setup(opts.precision, is_qdq, version, opts.calib_cache is not None, opts.mode)
    dla = opts.dla_core is not None
    logger = make_logger(trt, "WARNING", also=LOG_MARKERS if dla else ())
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
        check_request(device, setup.precision, opts.dla_core, version)
    elif dla:
        raise InputError("TensorRT-RTX has no DLA; drop --dla-core")
    paths = resolve_paths(opts, setup, version, device)

    calib_bytes = None
    if setup.mode == "implicit-int8":
        from edgevit.engine.calibrator import cache_for_version

        calib_bytes = cache_for_version(Path(str(opts.calib_cache)), version.calib_tag)  # set: choose_setup checked

    # A prepared ONNX goes to a scratch folder; it joins the engine under engines/ only on success.
    with tempfile.TemporaryDirectory(prefix="edgevit-build-") as tmp:
        parse_path, prepare_report = prepare_onnx(opts, setup, Path(tmp) / paths.parse_onnx.name)
        job = NetworkJob(trt, version, logger, builder, setup, opts, parse_path, paths.timing_cache, calib_bytes)
        net = parse_network(job)
        configured = configure(job, net)
        t0 = time.perf_counter()
        serialized = builder.build_serialized_network(net.network, configured.config)
        seconds = time.perf_counter() - t0
        if configured.calibrator is not None and configured.calibrator.batches_requested:
            raise BackendError(
                f"TensorRT rejected the calibration cache {opts.calib_cache} (header retagged to {version.calib_tag}) "
                "and asked for calibration data; regenerate it with `edgevit quantize` for this FP32 ONNX"
            )
        if serialized is None:
            raise BackendError(f"{version} failed to build {parse_path}: {logger.last_error() or 'no error message'}")
        serialized = bytes(serialized)
        io, layers, precision_check = _read_back(trt, version, logger, serialized, net.network, setup)
        dla_report = _dla_report(configured, layers, logger) if dla else {}
        notes = logger.warnings() + setup.notes
        result = BuildResult(None, None, setup, len(serialized), seconds, notes, dla_report, version)
        if not write:
            return result
        manifest = _manifest(opts, setup, version, device, info, paths, net, serialized, seconds, io)
        manifest.layer_precisions, manifest.precision_check = layers, precision_check
        manifest.settings["fp32_layers"] = len(configured.fp32_layers)
        manifest.fp16_conversion = prepare_report.get("fp16_conversion", {})
        if "layernorm_decomposed" in prepare_report:
            manifest.settings["layernorm_decomposed"] = prepare_report["layernorm_decomposed"]
        manifest.trtexec_command = trtexec_command(
            setup, paths, version, net.input_name, net.chw, opts, configured.fp32_layers
        )
        manifest.dla = dla_report
        _write(paths, manifest, serialized, parse_path, calib_bytes)
    if configured.timing is not None and paths.timing_cache is not None:
        with contextlib.suppress(OSError):  # a cache we cannot save only costs time next build
            write_bytes_atomic(paths.timing_cache, bytes(configured.config.get_timing_cache().serialize()))
    result.engine, result.manifest = paths.engine, manifest
    return result


def _write(paths: BuildPaths, manifest: Manifest, serialized: bytes, parse_path: Path, calib: bytes | None) -> None:
    """Engine, manifest, prepared ONNX and retagged calibration cache: all or nothing."""
    with contextlib.ExitStack() as outputs:
        tmp_engine = outputs.enter_context(atomic_output(paths.engine))
        tmp_manifest = outputs.enter_context(atomic_output(paths.manifest))
        if paths.prepared:
            shutil.copyfile(parse_path, outputs.enter_context(atomic_output(paths.parse_onnx)))
        if calib is not None and paths.calib_cache is not None:
            outputs.enter_context(atomic_output(paths.calib_cache)).write_bytes(calib)
        tmp_engine.write_bytes(serialized)
        manifest.save(tmp_manifest)


def _manifest(
    opts: BuildOptions,
    setup: BuildSetup,
    version: TrtVersion,
    device: DeviceInfo,
    info: ArtifactInfo,
    paths: BuildPaths,
    net: Network,
    serialized: bytes,
    seconds: float,
    io: list[TensorSpec],
) -> Manifest:
    from edgevit import __version__

    b, chw = opts.batch_profile, net.chw
    artifact = ArtifactInfo(
        model_config=info.model_config,
        preprocess=info.preprocess,
        class_names=list(info.class_names),
        precision=setup.precision,
        source_sha256=sha256_file(opts.onnx),
        data=info.data,
        extra={**info.extra, "source_precision": info.precision},
    )
    return Manifest(
        engine_file=paths.engine.name,
        engine_sha256=hashlib.sha256(serialized).hexdigest(),
        engine_bytes=len(serialized),
        tensorrt_version=version.text,
        tensorrt_module=version.module,
        device=device,
        precision=setup.precision,
        build_mode=setup.mode,
        profile={"min": [b[0], *chw], "opt": [b[1], *chw], "max": [b[2], *chw]},
        io=io,
        source_onnx=str(opts.onnx),
        source_sha256=artifact.source_sha256,
        artifact=artifact,
        built_from=str(paths.parse_onnx),
        calib_cache=str(opts.calib_cache or ""),
        dla_core=opts.dla_core,
        build_seconds=round(seconds, 3),
        built_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        settings={
            "workspace_mib": opts.workspace_mib,
            "opt_level": opts.opt_level,
            "timing_cache": str(paths.timing_cache or ""),
            "calib_cache_used": str(paths.calib_cache or ""),
            "fp32_ops": list(opts.fp32_ops) if setup.convert_fp16 else [],
            "builder_flags": setup.builder_flags,
            "notes": setup.notes,
        },
        rebuild_command=rebuild_command(opts, setup.precision, paths.engine),
        edgevit_version=__version__,
    )


def _device_for(version: TrtVersion, builder: Any) -> DeviceInfo:
    if version.is_rtx:
        try:
            return detect_device()
        except EdgeVitError:
            return DeviceInfo(gpu_name="none (TensorRT-RTX build check on CPU)", compute_capability="0.0")
    device = detect_device()
    cores = getattr(builder, "num_DLA_cores", None)
    if cores is not None:
        device = DeviceInfo(
            device.gpu_name,
            device.compute_capability,
            device.jetson,
            device.cuda_driver,
            int(cores),
            device.cuda_python,
        )
    return device


def _np_dtype_name(trt: Any, dtype: Any) -> str:
    try:
        import numpy as np

        return str(np.dtype(trt.nptype(dtype)))
    except Exception:
        return str(dtype).split(".")[-1].lower()


def _read_back(
    trt: Any, version: TrtVersion, logger: Any, serialized: bytes, network: Any, setup: BuildSetup
) -> tuple[list[TensorSpec], dict[str, Any], str]:
    """I/O specs and layer precisions from the deserialized engine (TensorRT), or from the
    network where the engine cannot be deserialized (TensorRT-RTX without a GPU)."""
    if version.is_rtx:
        io = [
            TensorSpec(t.name, mode, [int(d) for d in t.shape], _np_dtype_name(trt, t.dtype))
            for mode, ts in (
                ("input", [network.get_input(i) for i in range(network.num_inputs)]),
                ("output", [network.get_output(i) for i in range(network.num_outputs)]),
            )
            for t in ts
        ]
        return io, {}, "not checked: TensorRT-RTX cannot deserialize an engine without a GPU"
    runtime = trt.Runtime(logger.trt_logger)
    engine = runtime.deserialize_cuda_engine(serialized)
    if engine is None:
        raise BackendError(f"the freshly built engine does not deserialize: {logger.last_error() or 'no message'}")
    io = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        mode = "input" if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "output"
        shape = [int(d) for d in engine.get_tensor_shape(name)]
        io.append(TensorSpec(name, mode, shape, _np_dtype_name(trt, engine.get_tensor_dtype(name))))
    inspector = engine.create_engine_inspector()
    summary = summarize(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    return io, summary, check_precision(summary, setup.precision, setup.strongly_typed)


def _dla_report(configured: Configured, layers: dict[str, Any], logger: Any) -> dict[str, Any]:
    """What runs on DLA, from three witnesses; refuses an engine with nothing on DLA.

    ``dla_capable_layers``: network layers ``can_run_on_DLA`` accepted before the build;
    ``dla_subgraphs`` / ``gpu_layers``: the builder's own placement report (its log);
    ``dla_regions``: DLA loadables seen in the engine inspector.
    """
    report = dict(configured.dla)
    logged = dla_from_log(logger.messages())
    if logged is not None:
        report.update(logged)
    if layers:
        report["dla_regions"] = int(layers.get("dla_regions", 0))
    witnesses = [report.get(k) for k in ("dla_capable_layers", "dla_subgraphs", "dla_regions") if k in report]
    if witnesses and not any(witnesses):
        types = ", ".join(sorted(report.get("gpu_layer_types", {}))) or "all"
        raise BackendError(
            f"--dla-core: no layer of this model runs on the DLA (on the GPU: {types}); "
            "the engine would be a GPU engine: build without --dla-core"
        )
    return report
