"""The TensorRT side of a build: network from the ONNX parser, builder config, FP32 pins, DLA.

Every call here exists in the Python bindings of each TensorRT version it runs on, or is
gated by a :class:`~edgevit.trt.trtapi.TrtVersion` property; tests/trt checks both against the
names NVIDIA's bindings define at each release (8.5, 8.6, 10.3, 10.13, 10.16, 11.0, 11.1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgevit.engine.decompose import is_decomposed
from edgevit.engine.modes import BuildSetup
from edgevit.engine.options import BuildOptions
from edgevit.errors import ArtifactError, InputError
from edgevit.trt.trtapi import CollectingLogger, TrtVersion, parser_errors

# Layer types that never compute (their precision is their input's): not pinned.
_NO_COMPUTE = ("CONSTANT", "SHUFFLE", "SHAPE", "IDENTITY", "CAST")


@dataclass
class NetworkJob:
    """What turning one ONNX into a configured TensorRT network needs."""

    trt: Any  # the tensorrt (or tensorrt_rtx) module
    version: TrtVersion
    logger: CollectingLogger
    builder: Any
    setup: BuildSetup
    opts: BuildOptions
    parse_path: Path
    timing_path: Path | None = None
    calib_bytes: bytes | None = None  # implicit INT8: the retagged cache


@dataclass
class Network:
    network: Any
    parser: Any  # kept alive as long as the network (the parser owns the weights)
    input_name: str
    chw: tuple[int, int, int]


@dataclass
class Configured:
    config: Any
    calibrator: Any = None
    timing: Any = None  # the ITimingCache in use
    fp32_layers: list[str] = field(default_factory=list)  # layers pinned to FP32
    dla: dict[str, Any] = field(default_factory=dict)  # what the network offers to DLA


def parse_network(job: NetworkJob) -> Network:
    """Create the network and parse ``job.parse_path`` into it.

    Raises:
        ArtifactError: the parser rejected the graph (errors listed node by node), or the
            graph is not a one-input N x C x H x W classifier with a dynamic batch.
    """
    trt, version = job.trt, job.version
    flags = 0
    if job.setup.strongly_typed:
        # 10.x: value 1; 11.x: value 0 and deprecated (always on): the name is right on both.
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    elif version.needs_explicit_batch_flag:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)  # required for ONNX before 10
    network = job.builder.create_network(flags)
    parser = trt.OnnxParser(network, job.logger.trt_logger)
    if not parser.parse_from_file(str(job.parse_path)):
        errs = parser_errors(parser, job.logger)
        shown = "; ".join(str(e) for e in errs[:5]) or job.logger.last_error() or "no details"
        more = f" (+{len(errs) - 5} more)" if len(errs) > 5 else ""
        raise ArtifactError(f"TensorRT's ONNX parser ({version}) rejected {job.parse_path}: {shown}{more}")
    src = job.opts.onnx
    if network.num_inputs != 1:
        raise ArtifactError(f"{src} has {network.num_inputs} inputs; an edgevit classifier has exactly one")
    inp = network.get_input(0)
    dims = tuple(int(d) for d in inp.shape)
    if len(dims) != 4 or any(d < 0 for d in dims[1:]):
        raise ArtifactError(f"{src} input {inp.name} has shape {dims}; expected N x C x H x W with a dynamic N")
    if dims[0] >= 0 and job.opts.batch_profile != (dims[0],) * 3:
        raise ArtifactError(f"{src} has a fixed batch of {dims[0]}; re-export it with a dynamic batch axis")
    return Network(network, parser, str(inp.name), (dims[1], dims[2], dims[3]))


def configure(job: NetworkJob, net: Network) -> Configured:
    """The builder config: workspace, optimization level, verbosity, precision flags and FP32
    pins, the optimization profile, the calibrator, DLA and the timing cache.

    Raises:
        InputError: ``--opt-level`` on a TensorRT without it (< 8.6).
    """
    trt, opts, setup = job.trt, job.opts, job.setup
    config = job.builder.create_builder_config()
    out = Configured(config)
    if opts.workspace_mib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(opts.workspace_mib) << 20)
    if opts.opt_level is not None:
        if not job.version.has_opt_level:
            raise InputError(f"{job.version} has no builder optimization level (TensorRT 8.6+); drop --opt-level")
        config.builder_optimization_level = int(opts.opt_level)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    for flag in setup.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if setup.constrain_fp32:
        out.fp32_layers = pin_fp32(trt, config, fp32_layers(trt, net.network))
    profile = job.builder.create_optimization_profile()
    b = opts.batch_profile
    chw = net.chw
    profile.set_shape(net.input_name, (b[0], *chw), (b[1], *chw), (b[2], *chw))
    config.add_optimization_profile(profile)
    if job.calib_bytes is not None:
        from edgevit.engine.calibrator import make_cache_calibrator

        out.calibrator = make_cache_calibrator(trt, job.calib_bytes, batch_size=b[1])
        config.int8_calibrator = out.calibrator
        config.set_calibration_profile(profile)
    if opts.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(opts.dla_core)
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        out.dla = dla_candidates(trt, config, net.network)
    if job.timing_path is not None:
        blob = job.timing_path.read_bytes() if job.timing_path.is_file() else b""
        out.timing = config.create_timing_cache(blob)
        if out.timing is None or not config.set_timing_cache(out.timing, ignore_mismatch=False):
            out.timing = config.create_timing_cache(b"")  # stale or foreign cache: start a fresh one
            config.set_timing_cache(out.timing, ignore_mismatch=False)
    return out


def layers(network: Any) -> list[Any]:
    return [network.get_layer(i) for i in range(int(network.num_layers))]


def _type_name(layer: Any) -> str:
    return str(getattr(layer.type, "name", layer.type)).split(".")[-1]


def fp32_layers(trt: Any, network: Any) -> list[Any]:
    """The layers kept in FP32 when the rest may run in FP16/INT8: normalization layers (8.6+),
    Softmax, and every layer of a decomposed LayerNorm (TensorRT < 8.6)."""
    picked = []
    for layer in layers(network):
        kind = _type_name(layer)
        if kind in _NO_COMPUTE:
            continue
        if kind in ("NORMALIZATION", "SOFTMAX") or is_decomposed(str(layer.name)):
            picked.append(layer)
    return picked


def pin_fp32(trt: Any, config: Any, picked: list[Any]) -> list[str]:
    """Builder-flags mode: give ``picked`` FP32 precision and FP32 float outputs, and ask the
    builder to prefer these constraints (``PREFER``: a layer without an FP32 kernel warns
    instead of failing the build; the inspector shows the outcome). Returns the layer names."""
    if not picked:
        return []
    floats = {trt.DataType.FLOAT, trt.DataType.HALF}
    for layer in picked:
        layer.precision = trt.DataType.FLOAT
        for i in range(int(layer.num_outputs)):
            if layer.get_output(i).dtype in floats:
                layer.set_output_type(i, trt.DataType.FLOAT)
    config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
    return [str(layer.name) for layer in picked]


def dla_candidates(trt: Any, config: Any, network: Any) -> dict[str, Any]:
    """Which network layers DLA can take (``can_run_on_DLA``), and the types that go to the GPU."""
    total, on_dla = 0, 0
    gpu_types: dict[str, int] = {}
    for layer in layers(network):
        total += 1
        if config.can_run_on_DLA(layer):
            on_dla += 1
        else:
            kind = _type_name(layer)
            gpu_types[kind] = gpu_types.get(kind, 0) + 1
    return {"network_layers": total, "dla_capable_layers": on_dla, "gpu_layer_types": gpu_types}
