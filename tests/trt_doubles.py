"""A stand-in ``tensorrt`` module per TensorRT release, built from the names NVIDIA's Python
bindings define at that release (``tests/trt/fixtures/bindings-trt-<version>.txt``).

Every attribute edgevit reads or writes on the module or on any object it returns is checked
against that list (direct members plus the base class's, as pybind11 inherits them): a name the
real binding lacks raises ``AttributeError`` exactly where the real module would, so a fake
cannot accept a call the real binding lacks. Behind the names sits just enough behaviour to
drive ``edgevit build`` and the runtime: the ONNX parser reads the graph with ``onnx`` and
refuses ops that onnx-tensorrt's table of that release marks unsupported (8.5: no
LayerNormalization), the builder reads a calibration cache only under its own version's header
(``NV_TENSORRT_VERSION``: 8.x MAJOR*1000+MINOR*100+PATCH, 10.x+ MAJOR*10000+...), and the engine
inspector writes the 8.x/10.x (``Format/Datatype``) or 11.x (``I/O Tensors``, split ``Format`` /
``DataType``) schema.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FIXTURES = Path(__file__).parent / "trt" / "fixtures"
# fixture label -> the full version the fake reports (the JetPack's, where one ships it)
VERSIONS = {
    "8.5": "8.5.2",
    "8.6": "8.6.2",
    "10.3": "10.3.0",
    "10.13": "10.13.3",
    "10.16": "10.16.0",
    "11.0": "11.0.0",
    "11.1": "11.1.0",
}
# pybind11 classes whose members edgevit reaches through a base class
BASES = {"Logger": "ILogger", "IInt8EntropyCalibrator2": "IInt8Calibrator", "OnnxParser": ""}


def binding_names(label: str) -> set[str]:
    """The names of ``bindings-trt-<label>.txt`` (comment lines skipped)."""
    text = (FIXTURES / f"bindings-trt-{label}.txt").read_text(encoding="utf-8")
    return {line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")}


def members(names: set[str], cls: str) -> set[str]:
    """Direct and inherited members of ``cls`` (``*Layer`` classes inherit ``ILayer``)."""
    out = {n[len(cls) + 1 :] for n in names if n.startswith(cls + ".") and "." not in n[len(cls) + 1 :]}
    base = BASES.get(cls, "ILayer" if cls.endswith("Layer") and cls != "ILayer" else "")
    return out | (members(names, base) if base else set())


def version_number(version: str) -> int:
    """``NV_TENSORRT_VERSION`` as NVIDIA's headers define it (not edgevit's code)."""
    major, minor, patch = (int(p) for p in ([*version.split("."), "0", "0"])[:3])
    return major * (10000 if major >= 10 else 1000) + minor * 100 + patch


class Api:
    """What one fake module allows, and what edgevit touched."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.version = VERSIONS[label]
        self.names = binding_names(label)
        self.touched: set[str] = set()
        self._members: dict[str, set[str]] = {}

    def allowed(self, cls: str) -> set[str]:
        if cls not in self._members:
            self._members[cls] = members(self.names, cls)
        return self._members[cls]

    def check(self, cls: str, name: str) -> None:
        if name not in self.allowed(cls):
            raise AttributeError(f"TensorRT {self.version}'s Python bindings have no {cls}.{name}")
        self.touched.add(f"{cls}.{name}")


class Strict:
    """A real binding object's face: only the fixture's names, reads and writes alike."""

    def __init__(self, api: Api, cls: str, impl: Any) -> None:
        object.__setattr__(self, "_api", api)
        object.__setattr__(self, "_cls", cls)
        object.__setattr__(self, "_impl", impl)

    def __getattr__(self, name: str) -> Any:
        self._api.check(self._cls, name)
        return getattr(self._impl, name)

    def __setattr__(self, name: str, value: Any) -> None:
        self._api.check(self._cls, name)
        setattr(self._impl, name, value)

    def __repr__(self) -> str:
        return f"<fake tensorrt {self._api.version} {self._cls}>"


def unwrap(obj: Any) -> Any:
    return object.__getattribute__(obj, "_impl") if isinstance(obj, Strict) else obj


class EnumValue:
    def __init__(self, enum: str, name: str, value: int) -> None:
        self.enum, self.name, self.value = enum, name, value

    def __int__(self) -> int:
        return self.value

    __index__ = __int__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EnumValue) and (other.enum, other.name) == (self.enum, self.name)

    def __hash__(self) -> int:
        return hash((self.enum, self.name))

    def __repr__(self) -> str:
        return f"{self.enum}.{self.name}"


class Enum:
    """A pybind11 enum with exactly the fixture's members."""

    def __init__(self, api: Api, name: str, values: dict[str, int] | None = None) -> None:
        self._api, self._name = api, name
        names = sorted(api.allowed(name) - {"__repr__", "__str__", "itemsize", "Severity"})
        self._values = {n: EnumValue(name, n, (values or {}).get(n, i)) for i, n in enumerate(names)}

    def __getattr__(self, member: str) -> EnumValue:
        if member.startswith("_"):
            raise AttributeError(member)
        self._api.check(self._name, member)
        return self._values[member]


# -- behaviour --------------------------------------------------------------------------------

ONNX_TO_LAYER = {
    "LayerNormalization": "NORMALIZATION",
    "Softmax": "SOFTMAX",
    "MatMul": "MATRIX_MULTIPLY",
    "Gemm": "MATRIX_MULTIPLY",
    "Conv": "CONVOLUTION",
    "ReduceMean": "REDUCE",
    "Add": "ELEMENTWISE",
    "Sub": "ELEMENTWISE",
    "Mul": "ELEMENTWISE",
    "Div": "ELEMENTWISE",
    "Pow": "ELEMENTWISE",
    "Sqrt": "UNARY",
    "Erf": "UNARY",
    "Constant": "CONSTANT",
    "Reshape": "SHUFFLE",
    "Transpose": "SHUFFLE",
    "Flatten": "SHUFFLE",
    "QuantizeLinear": "QUANTIZE",
    "DequantizeLinear": "DEQUANTIZE",
    "Gather": "GATHER",
    "Concat": "CONCATENATION",
    "Cast": "CAST",
    "Shape": "SHAPE",
}
DLA_TYPES = {"CONVOLUTION", "POOLING", "ACTIVATION", "SCALE"}


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: Any


@dataclass
class Layer:
    name: str
    type: Any
    op: str
    outputs: list[Any] = field(default_factory=list)
    precision: Any = None
    output_types: dict[int, Any] = field(default_factory=dict)

    @property
    def num_outputs(self) -> int:
        return len(self.outputs)

    def get_output(self, i: int) -> Any:
        return self.outputs[i]

    def set_output_type(self, index: int, dtype: Any) -> None:
        self.output_types[index] = dtype


class FakeTrt:
    """The module: ``make_trt(label)`` returns a :class:`Module` facing it."""

    def __init__(self, label: str) -> None:
        self.api = Api(label)
        self.label = label
        self.builds: list[dict[str, Any]] = []
        self.engines: dict[str, dict[str, Any]] = {}
        self.top: dict[str, Any] = {}  # one object per top-level name, like a module
        major = int(label.split(".")[0])
        nd_values = {"EXPLICIT_BATCH": 0, "EXPLICIT_PRECISION": 1, "STRONGLY_TYPED": 0 if major >= 11 else 1}
        self.enums = {
            n: Enum(self.api, n, nd_values if n == "NetworkDefinitionCreationFlag" else None)
            for n in (
                "BuilderFlag",
                "NetworkDefinitionCreationFlag",
                "MemoryPoolType",
                "ProfilingVerbosity",
                "LayerInformationFormat",
                "DeviceType",
                "TensorIOMode",
                "DataType",
                "LayerType",
                "ErrorCode",
            )
        }

    def strict(self, cls: str, impl: Any) -> Strict:
        return Strict(self.api, cls, impl)

    def enum(self, enum: str, member: str) -> Any:
        return getattr(self.enums[enum], member)

    def has(self, qualified: str) -> bool:
        return qualified in self.api.names

    def layer_type(self, op: str) -> Any:
        name = ONNX_TO_LAYER.get(op, "IDENTITY")
        return self.enum("LayerType", name if self.has(f"LayerType.{name}") else "IDENTITY")


class Module:
    """``import tensorrt`` as the fake: top-level names checked against the fixture."""

    def __init__(self, fake: FakeTrt) -> None:
        object.__setattr__(self, "_fake", fake)

    def __getattr__(self, name: str) -> Any:
        fake: FakeTrt = object.__getattribute__(self, "_fake")
        if name.startswith("_") and name != "__version__":
            raise AttributeError(name)
        if name not in fake.api.names:
            raise AttributeError(f"TensorRT {fake.api.version}'s Python bindings have no tensorrt.{name}")
        fake.api.touched.add(name)
        if name == "__version__":
            return fake.api.version
        if name in fake.enums:
            return fake.enums[name]
        if name not in fake.top:
            factory = _TOP.get(name)
            if factory is None:
                raise AttributeError(f"the fake tensorrt does not model tensorrt.{name} (it exists in the bindings)")
            fake.top[name] = factory(fake)
        return fake.top[name]


def make_trt(label: str) -> tuple[Module, FakeTrt]:
    fake = FakeTrt(label)
    return Module(fake), fake


def _logger_class(fake: FakeTrt) -> type:
    class ILogger:  # subclassed by edgevit: a real class
        Severity = None

        def __init__(self) -> None:
            pass

    return ILogger


def _calibrator_class(fake: FakeTrt) -> type:
    class IInt8EntropyCalibrator2:
        def __init__(self) -> None:
            pass

    return IInt8EntropyCalibrator2


def _log(logger: Any, severity: str, msg: str) -> None:
    logger.log(type("Severity", (), {"name": severity})(), msg)


class BuilderImpl:
    def __init__(self, fake: FakeTrt, logger: Any) -> None:
        self.fake, self.logger = fake, logger
        self.num_DLA_cores = 2

    def create_network(self, flags: int) -> Strict:
        return self.fake.strict("INetworkDefinition", NetworkImpl(self.fake, int(flags)))

    def create_builder_config(self) -> Strict:
        return self.fake.strict("IBuilderConfig", ConfigImpl(self.fake))

    def create_optimization_profile(self) -> Strict:
        return self.fake.strict("IOptimizationProfile", ProfileImpl())

    def build_serialized_network(self, network: Any, config: Any) -> bytes | None:
        return build(self.fake, self.logger, unwrap(network), unwrap(config))


class NetworkImpl:
    def __init__(self, fake: FakeTrt, flags: int) -> None:
        self.fake = fake
        f = fake.enums["NetworkDefinitionCreationFlag"]
        major = int(fake.label.split(".")[0])
        self.explicit_batch = major >= 10 or bool(flags & (1 << int(f.EXPLICIT_BATCH)))
        self.strongly_typed = major >= 11 or (
            fake.has("NetworkDefinitionCreationFlag.STRONGLY_TYPED") and bool(flags & (1 << int(f.STRONGLY_TYPED)))
        )
        self.inputs: list[Tensor] = []
        self.outputs: list[Tensor] = []
        self._layers: list[Layer] = []
        self.onnx: Any = None

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    @property
    def num_outputs(self) -> int:
        return len(self.outputs)

    @property
    def num_layers(self) -> int:
        return len(self._layers)

    def get_input(self, i: int) -> Strict:
        return self.fake.strict("ITensor", self.inputs[i])

    def get_output(self, i: int) -> Strict:
        return self.fake.strict("ITensor", self.outputs[i])

    def get_layer(self, i: int) -> Strict:
        return self.fake.strict("ILayer", self._layers[i])


@dataclass
class ParserErrorImpl:
    index: int
    name: str
    op: str
    message: str

    def code(self) -> str:
        return "ErrorCode.UNSUPPORTED_NODE"

    def desc(self) -> str:
        return self.message

    def node(self) -> int:
        return self.index

    def node_name(self) -> str:
        return self.name

    def node_operator(self) -> str:
        return self.op


class ParserImpl:
    def __init__(self, fake: FakeTrt, network: Any, logger: Any) -> None:
        self.fake, self.network, self.logger = fake, unwrap(network), logger
        self.errors: list[ParserErrorImpl] = []

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, i: int) -> Strict:
        return self.fake.strict("ParserError", self.errors[i])

    def parse_from_file(self, path: str) -> bool:
        import onnx

        from edgevit.engine.opcheck import load_table, table_for
        from edgevit.trt.trtapi import TrtVersion

        net: NetworkImpl = self.network
        if not net.explicit_batch:  # onnx-tensorrt 8.x: "Network must have the explicit batch flag set"
            self.errors.append(ParserErrorImpl(-1, "", "", "Network must have the explicit batch flag set."))
            return False
        model = onnx.load(path)
        table = load_table(table_for(TrtVersion.parse(self.fake.api.version)))
        for i, node in enumerate(model.graph.node):
            support = table.ops.get(node.op_type)
            if support is None or not support.supported:
                # onnx-tensorrt's own wording for an op without importer
                msg = f"No importer registered for op: {node.op_type}. Attempting to import as plugin."
                _log(self.logger, "ERROR", f"{node.name}: {msg}")
                self.errors.append(ParserErrorImpl(i, node.name, node.op_type, msg))
                return False
        dims = [d.dim_value if d.dim_value else -1 for d in model.graph.input[0].type.tensor_type.shape.dim]
        flt = self.fake.enum("DataType", "FLOAT")
        net.inputs = [Tensor(model.graph.input[0].name, tuple(dims), flt)]
        net.outputs = [Tensor(o.name, (-1, 10), flt) for o in model.graph.output]
        for node in model.graph.node:
            out = self.fake.strict("ITensor", Tensor(node.output[0], (), flt))
            net._layers.append(Layer(node.name, self.fake.layer_type(node.op_type), node.op_type, [out]))
        net.onnx = model
        return True


class ConfigImpl:
    def __init__(self, fake: FakeTrt) -> None:
        self.fake = fake
        self.flags: set[str] = set()
        self.pools: dict[str, int] = {}
        self.builder_optimization_level = 3
        self.profiling_verbosity = None
        self.profiles: list[Any] = []
        self.int8_calibrator: Any = None
        self.calibration_profile: Any = None
        self.default_device_type = fake.enum("DeviceType", "GPU")
        self.DLA_core = -1
        self.timing_cache: Any = None

    def set_flag(self, flag: Any) -> None:
        self.flags.add(flag.name)

    def set_memory_pool_limit(self, pool: Any, pool_size: int) -> None:
        self.pools[pool.name] = int(pool_size)

    def add_optimization_profile(self, profile: Any) -> int:
        self.profiles.append(unwrap(profile))
        return len(self.profiles) - 1

    def set_calibration_profile(self, profile: Any) -> bool:
        self.calibration_profile = unwrap(profile)
        return True

    def can_run_on_DLA(self, layer: Any) -> bool:
        return unwrap(layer).type.name in DLA_TYPES

    def create_timing_cache(self, serialized_timing_cache: bytes) -> Strict:
        return self.fake.strict("ITimingCache", TimingCacheImpl(bytes(serialized_timing_cache)))

    def set_timing_cache(self, cache: Any, ignore_mismatch: bool) -> bool:
        self.timing_cache = unwrap(cache)
        return True

    def get_timing_cache(self) -> Strict:
        return self.fake.strict("ITimingCache", self.timing_cache)


@dataclass
class TimingCacheImpl:
    blob: bytes

    def serialize(self) -> bytes:
        return self.blob or b"FAKE-TIMING-CACHE"


@dataclass
class ProfileImpl:
    shapes: dict[str, tuple[Any, Any, Any]] = field(default_factory=dict)

    def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:
        self.shapes[input] = (tuple(min), tuple(opt), tuple(max))


def build(fake: FakeTrt, logger: Any, net: NetworkImpl, config: ConfigImpl) -> bytes | None:
    """What TensorRT's builder does that edgevit depends on."""
    record = {"flags": sorted(config.flags), "strongly_typed": net.strongly_typed, "config": config, "network": net}
    fake.builds.append(record)
    if net.strongly_typed and config.flags & {"FP16", "INT8", "BF16"}:
        _log(logger, "ERROR", "BuilderFlag::kFP16/kINT8 are not allowed for a strongly typed network")
        return None
    if not config.profiles:
        _log(logger, "ERROR", "Network has dynamic or shape inputs, but no optimization profile has been defined.")
        return None
    calibrated = False
    if config.int8_calibrator is not None:
        cal = config.int8_calibrator
        cache = bytes(cal.read_calibration_cache() or b"")
        want = f"TRT-{version_number(fake.api.version)}-EntropyCalibration2"
        if cache.split(b"\n", 1)[0].decode() != want:
            # TensorRT skips a cache of another version and calibrates: with no data it fails
            cal.get_batch_size()
            if cal.get_batch([t.name for t in net.inputs]) is None:
                _log(logger, "ERROR", "Calibration failure occurred with no scaling factors detected.")
                return None
        calibrated = True
    layers = []
    for layer in net._layers:
        layers.append({"name": layer.name, "type": layer.type.name, "precision": _precision(fake, net, config, layer)})
    if calibrated:
        layers = [dict(lay, precision="INT8") if lay["type"] == "MATRIX_MULTIPLY" else lay for lay in layers]
    dla = str(config.default_device_type.name) == "DLA"
    on_dla = [lay for lay in net._layers if dla and lay.type.name in DLA_TYPES]
    if dla:
        _log(logger, "INFO", "---------- Layers Running on DLA ----------")
        for lay in on_dla:
            _log(logger, "INFO", f"[DlaLayer] {{ForeignNode[{lay.name}]}}")
        _log(logger, "INFO", "---------- Layers Running on GPU ----------")
        for lay in net._layers:
            if lay not in on_dla:
                _log(logger, "INFO", f"[GpuLayer] {lay.type.name}: {lay.name}")
    blob = json.dumps({"label": fake.label, "layers": layers, "dla": [lay.name for lay in on_dla]}).encode()
    key = hashlib.sha256(blob).hexdigest()
    fake.engines[key] = {
        "layers": layers,
        "inputs": net.inputs,
        "outputs": net.outputs,
        "dla": [x.name for x in on_dla],
    }
    return b"FAKEENGINE" + key.encode()


def _precision(fake: FakeTrt, net: NetworkImpl, config: ConfigImpl, layer: Layer) -> str:
    if layer.type.name in ("QUANTIZE", "DEQUANTIZE"):
        return "INT8"
    has_qdq = any(lay.op == "DequantizeLinear" for lay in net._layers)
    if layer.type.name == "MATRIX_MULTIPLY" and has_qdq and ("INT8" in config.flags or net.strongly_typed):
        return "INT8"
    pinned = layer.precision is not None and layer.precision.name == "FLOAT"
    constrained = config.flags & {"PREFER_PRECISION_CONSTRAINTS", "OBEY_PRECISION_CONSTRAINTS"}
    if net.strongly_typed:
        fp16 = net.onnx is not None and any(
            n.op_type == "Cast" and any(a.name == "to" and a.i == 10 for a in n.attribute) for n in net.onnx.graph.node
        )
        return "FP16" if fp16 and layer.op not in ("LayerNormalization", "Softmax") else "FP32"
    if "FP16" in config.flags and not (pinned and constrained):
        return "FP16"
    return "FP32"


class RuntimeImpl:
    def __init__(self, fake: FakeTrt, logger: Any) -> None:
        self.fake, self.logger = fake, logger

    def deserialize_cuda_engine(self, serialized: bytes) -> Strict | None:
        data = bytes(serialized)
        key = data[len(b"FAKEENGINE") :].decode(errors="replace")
        if not data.startswith(b"FAKEENGINE") or key not in self.fake.engines:
            _log(self.logger, "ERROR", "Serialization assertion failed: magic tag")
            return None
        return self.fake.strict("ICudaEngine", EngineImpl(self.fake, self.fake.engines[key]))


class EngineImpl:
    def __init__(self, fake: FakeTrt, data: dict[str, Any]) -> None:
        self.fake, self.data = fake, data
        self.tensors = [(t, "INPUT") for t in data["inputs"]] + [(t, "OUTPUT") for t in data["outputs"]]

    @property
    def num_io_tensors(self) -> int:
        return len(self.tensors)

    def get_tensor_name(self, index: int) -> str:
        return self.tensors[index][0].name

    def _find(self, name: str) -> tuple[Tensor, str]:
        return next(t for t in self.tensors if t[0].name == name)

    def get_tensor_mode(self, name: str) -> Any:
        return self.fake.enum("TensorIOMode", self._find(name)[1])

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self._find(name)[0].shape

    def get_tensor_dtype(self, name: str) -> Any:
        return self._find(name)[0].dtype

    def create_engine_inspector(self) -> Strict:
        return self.fake.strict("EngineInspector", InspectorImpl(self.fake, self.data))


class InspectorImpl:
    def __init__(self, fake: FakeTrt, data: dict[str, Any]) -> None:
        self.fake, self.data = fake, data

    def get_engine_information(self, format: Any) -> str:
        eleven = int(self.fake.label.split(".")[0]) >= 11
        words = {"INT8": ("Int8", "Row major Int8 format"), "FP16": ("Half", "Row major linear FP16 format")}
        words["FP32"] = ("Float", "Row major linear FP32")

        def tensor(name: str, precision: str) -> dict[str, Any]:
            dtype, fmt = words[precision]
            if eleven:  # 11.x: the Format/Datatype field split in two
                return {
                    "Name": name,
                    "Dimensions": [1],
                    "Format": fmt.replace(" Int8", "").replace(" FP16", ""),
                    "DataType": dtype,
                }
            return {"Name": name, "Dimensions": [1], "Format/Datatype": fmt}

        layers: list[Any] = []
        dla = set(self.data.get("dla", []))
        for lay in self.data["layers"]:
            if lay["name"] in dla:
                layers.append(
                    {
                        "Name": f"{lay['name']} input to nvm",
                        "LayerType": "Reformat",
                        "Inputs": [tensor("x", "FP32")],
                        "Outputs": [tensor(f"{lay['name']}:nvm", "FP16")],
                    }
                )
                layers.append(
                    {
                        "Name": f"{{ForeignNode[{lay['name']}]}}",
                        "LayerType": "DLA",
                        "Inputs": [tensor(f"{lay['name']}:nvm", "FP16")],
                        "Outputs": [tensor("y", "FP16")],
                    }
                )
                continue
            p = lay["precision"]
            layers.append(
                {
                    "Name": lay["name"],
                    "LayerType": lay["type"],
                    "Inputs": [tensor("in", p)],
                    "Outputs": [tensor("out", p)],
                }
            )
        io = [t.name for t in self.data["inputs"]] + [t.name for t in self.data["outputs"]]
        if eleven:
            return json.dumps({"Layers": layers, "I/O Tensors": [{"Name": n, "DataType": "Float"} for n in io]})
        return json.dumps({"Layers": layers, "Bindings": io})


def _nptype(fake: FakeTrt) -> Any:
    def nptype(dtype: Any) -> Any:
        return {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32}[dtype.name]

    return nptype


_TOP = {
    "Builder": lambda fake: lambda logger: fake.strict("Builder", BuilderImpl(fake, logger)),
    "Runtime": lambda fake: lambda logger: fake.strict("Runtime", RuntimeImpl(fake, logger)),
    "OnnxParser": lambda fake: lambda network, logger: fake.strict("OnnxParser", ParserImpl(fake, network, logger)),
    "ILogger": _logger_class,
    "IInt8EntropyCalibrator2": _calibrator_class,
    "nptype": _nptype,
}


class TopLevel:
    """A fake module whose top-level names are checked against ``api``'s fixture, with the
    behaviour a test provides (the runtime tests bring their own engine and context)."""

    def __init__(self, api: Api, values: dict[str, Any]) -> None:
        object.__setattr__(self, "_api", api)
        object.__setattr__(self, "_values", values)

    def __getattr__(self, name: str) -> Any:
        api: Api = object.__getattribute__(self, "_api")
        if name not in api.names:
            raise AttributeError(f"TensorRT {api.version}'s Python bindings have no tensorrt.{name}")
        api.touched.add(name)
        return object.__getattribute__(self, "_values")[name]
