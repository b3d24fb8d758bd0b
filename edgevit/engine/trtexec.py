"""The trtexec command equivalent to an ``edgevit build``, for the TensorRT that will run it.

Options exist per trtexec version (``samples/common/sampleOptions.cpp`` at each release):
``--memPoolSize`` from 8.4 (``--workspace`` before), ``--builderOptimizationLevel`` from 8.6,
``--stronglyTyped`` in 10.x (a no-op in 11.x, where ``--fp16``/``--int8``/``--calib`` and the
layer-precision options are gone), ``--precisionConstraints``/``--layerPrecisions``/
``--layerOutputTypes`` 8.4 to 10.x.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from edgevit.engine.modes import BuildSetup, choose_setup
from edgevit.engine.options import BuildOptions
from edgevit.engine.paths import BuildPaths, resolve_paths
from edgevit.engine.prepare import fp32_node_names, prepare_onnx, source_kind
from edgevit.errors import BackendError, InputError
from edgevit.trt.device import DeviceInfo
from edgevit.trt.trtapi import TrtVersion, import_tensorrt


def trtexec_command(
    setup: BuildSetup,
    paths: BuildPaths,
    version: TrtVersion,
    input_name: str,
    chw: tuple[int, int, int],
    opts: BuildOptions,
    fp32_layers: list[str] | None = None,
) -> str:
    """The trtexec command line equivalent to this build on ``version``.

    Raises:
        InputError: an option this trtexec does not have (``--opt-level`` before 8.6).
    """

    def shape(n: int) -> str:
        return f"{input_name}:{n}x" + "x".join(map(str, chw))

    b = opts.batch_profile
    parts = [
        "trtexec",
        f"--onnx={paths.parse_onnx}",
        f"--saveEngine={paths.engine}",
        f"--minShapes={shape(b[0])}",
        f"--optShapes={shape(b[1])}",
        f"--maxShapes={shape(b[2])}",
    ]
    if setup.strongly_typed and version.trtexec_strongly_typed_flag:
        parts.append("--stronglyTyped")
    parts += [f"--{f.lower()}" for f in setup.builder_flags]
    if fp32_layers and setup.constrain_fp32 and version.trtexec_has_layer_precisions:
        parts.append("--precisionConstraints=prefer")
        parts.append("--layerPrecisions=" + ",".join(f"{name}:fp32" for name in fp32_layers))
        parts.append("--layerOutputTypes=" + ",".join(f"{name}:fp32" for name in fp32_layers))
    if paths.calib_cache is not None:
        parts.append(f"--calib={paths.calib_cache}")
    if opts.workspace_mib:
        if version.trtexec_has_mem_pool:
            parts.append(f"--memPoolSize=workspace:{opts.workspace_mib}")
        else:
            parts.append(f"--workspace={opts.workspace_mib}")
    if opts.opt_level is not None:
        if not version.has_opt_level:
            raise InputError(f"{version} has no builder optimization level (TensorRT 8.6+); drop --opt-level")
        parts.append(f"--builderOptimizationLevel={opts.opt_level}")
    if paths.timing_cache is not None:
        parts.append(f"--timingCacheFile={paths.timing_cache}")
    if opts.dla_core is not None:
        parts += [f"--useDLACore={opts.dla_core}", "--allowGPUFallback"]
    parts.append("--profilingVerbosity=detailed")
    return shlex.join(parts)


def print_trtexec(opts: BuildOptions, trt_version: str | None = None) -> str:
    """The trtexec command equivalent to ``edgevit build`` with ``opts``, for the running
    TensorRT or for ``trt_version`` (the device's) when TensorRT is not installed here.

    Prepares what the command reads, at the paths a build would use: the ONNX TensorRT parses
    (LayerNorm decomposed below 8.6, the FP16 conversion of strongly typed FP16/best builds)
    and, for implicit INT8, the calibration cache with its header retagged for that version.
    Builds nothing.

    Raises:
        InputError: TensorRT is not installed and no ``trt_version`` was given, or the options
            do not fit that version.
    """
    info, is_qdq = source_kind(opts)
    device: DeviceInfo | None = None
    if trt_version:
        version = TrtVersion.parse(trt_version)
    else:
        try:
            _, version = import_tensorrt()
        except BackendError:
            raise InputError(
                "TensorRT is not installed here: give the device's version with --trt-version "
                "(8.5.2 on JetPack 5.1, 8.6.2 on JetPack 6.0, 10.3.0 on JetPack 6.1/6.2, 10.13.3 on JetPack 7.0)"
            ) from None
        from edgevit.trt.device import detect_device

        try:  # on the device itself the timing cache gets the same name as in a build
            device = detect_device()
        except BackendError:
            device = None
    if opts.dla_core is not None:
        refusal = version.dla_refusal("Jetson AGX Orin")  # the device is not at hand: the most capable one
        if refusal:
            raise InputError(f"{refusal}; drop --dla-core")
    setup = choose_setup(opts.precision, is_qdq, version, opts.calib_cache is not None, opts.mode)
    paths = resolve_paths(opts, setup, version, device)
    if paths.prepared:
        prepare_onnx(opts, setup, paths.parse_onnx)
    if paths.calib_cache is not None:
        from edgevit.artifacts import write_bytes_atomic
        from edgevit.engine.calibrator import cache_for_version

        write_bytes_atomic(paths.calib_cache, cache_for_version(Path(str(opts.calib_cache)), version.calib_tag))
    fp32 = fp32_node_names(paths.parse_onnx, opts.fp32_ops) if setup.constrain_fp32 else []
    import onnxruntime as ort

    sess = ort.InferenceSession(str(opts.onnx), providers=["CPUExecutionProvider"])
    input_name = sess.get_inputs()[0].name
    return trtexec_command(setup, paths, version, input_name, info.preprocess.input_shape, opts, fp32)
