"""The TensorRT runtime backend.

Part 1 runs everywhere: the runner's buffer handling, batching, CUDA error checking and
clean-up are exercised against an in-memory stand-in for TensorRT and cuda-python (the
doubles copy bytes with ctypes exactly where the real calls would move them), and
``edgevit.runtime.load("x.engine")`` is driven end to end through them. The TensorRT double
exposes exactly the names of one release's Python bindings (tests/trt_doubles.py, fixtures
from NVIDIA's binding sources): the runner is run against 8.5, 8.6, 10.3, 10.13, 10.16, 11.0
and 11.1, and a call one of them lacks fails here as it would on that device.

Part 2 (``@pytest.mark.gpu``) needs TensorRT and a CUDA device (a Jetson). Whether TensorRT
can start is decided in a subprocess, because some TensorRT builds crash instead of raising
where there is no GPU; the skip reason says what is missing.
"""

from __future__ import annotations

import ctypes
import enum
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from trt_doubles import VERSIONS, Api, Strict, TopLevel

from edgevit.artifacts import ArtifactInfo, sha256_file
from edgevit.config import ViTConfig
from edgevit.errors import BackendError, InputError
from edgevit.preprocess import Preprocess
from edgevit.trt.device import DeviceInfo
from edgevit.trt.manifest import Manifest, TensorSpec, manifest_path

# ---------------------------------------------------------------------------------------------
# Part 1: doubles for cuda-python's runtime module and TensorRT's tensor API
# ---------------------------------------------------------------------------------------------


class CudaError(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorMemoryAllocation = 2


class CudaStream:
    """cuda-python's cudaStream_t: ``int()`` gives the handle, ``getPtr()`` the address of its storage."""

    def __init__(self, handle: int) -> None:
        self.handle = handle

    def __int__(self) -> int:
        return self.handle

    def getPtr(self) -> int:
        return id(self)


class FakeCudart:
    """cuda.bindings.runtime look-alike: returns (error, value) tuples; memory is ctypes buffers."""

    cudaError_t = CudaError
    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)

    def __init__(self, fail: str = "") -> None:
        self.fail = fail
        self.blocks: dict[int, Any] = {}
        self.streams: set[int] = set()
        self.copies: list[tuple[int, int]] = []  # (kind, bytes)

    def _alloc(self, n: int, what: str) -> tuple[CudaError, int]:
        if self.fail == what:
            return CudaError.cudaErrorMemoryAllocation, 0
        buf = ctypes.create_string_buffer(n)
        self.blocks[ctypes.addressof(buf)] = buf
        return CudaError.cudaSuccess, ctypes.addressof(buf)

    def cudaMallocHost(self, n: int) -> tuple[CudaError, int]:
        return self._alloc(n, "host")

    def cudaMalloc(self, n: int) -> tuple[CudaError, int]:
        return self._alloc(n, "device")

    def cudaFree(self, ptr: int) -> tuple[CudaError]:
        del self.blocks[ptr]
        return (CudaError.cudaSuccess,)

    cudaFreeHost = cudaFree

    def cudaStreamCreate(self) -> tuple[CudaError, CudaStream]:
        self.streams.add(77)
        return CudaError.cudaSuccess, CudaStream(77)

    def cudaStreamDestroy(self, s: CudaStream) -> tuple[CudaError]:
        self.streams.discard(int(s))
        return (CudaError.cudaSuccess,)

    def cudaStreamSynchronize(self, s: int) -> tuple[CudaError]:
        return (CudaError.cudaSuccess,)

    def cudaMemcpyAsync(self, dst: int, src: int, n: int, kind: int, stream: int) -> tuple[CudaError]:
        assert dst in self.blocks or any(a <= dst < a + len(b) for a, b in self.blocks.items())
        if self.fail == "memcpy":
            return (CudaError.cudaErrorMemoryAllocation,)
        ctypes.memmove(dst, src, n)
        self.copies.append((kind, n))
        return (CudaError.cudaSuccess,)

    def cudaGetErrorString(self, err: CudaError) -> tuple[CudaError, bytes]:
        return CudaError.cudaSuccess, b"out of memory"


class FakeContext:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.shape: tuple[int, ...] = ()
        self.addr: dict[str, int] = {}
        self.runs: list[int] = []

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        lo, _, hi = self.engine.profile
        if not (lo[0] <= shape[0] <= hi[0]) or tuple(shape[1:]) != lo[1:]:
            return False
        self.shape = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.shape if name == "images" else (self.shape[0], 10)

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addr[name] = ptr
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        assert stream_handle == 77, "TensorRT must get the stream's handle, not the address of its Python object"
        n = self.shape[0]
        count = int(np.prod(self.shape))
        x = np.ctypeslib.as_array((ctypes.c_float * count).from_address(self.addr["images"])).reshape(n, -1)
        y = np.ctypeslib.as_array((ctypes.c_float * (n * 10)).from_address(self.addr["logits"])).reshape(n, 10)
        y[:] = x[:, :10] * 2.0 + 1.0  # a deterministic "network"
        self.runs.append(n)
        return True


class FakeEngine:
    num_io_tensors = 2

    def __init__(self, profile: tuple[tuple[int, ...], ...], api: Api | None = None) -> None:
        self.profile = profile
        self.api = api
        self.contexts: list[FakeContext] = []

    def get_tensor_name(self, i: int) -> str:
        return ["images", "logits"][i]

    def get_tensor_mode(self, name: str) -> str:
        return "IN" if name == "images" else "OUT"

    def get_tensor_dtype(self, name: str) -> str:
        return "float"

    def get_tensor_profile_shape(self, name: str, index: int) -> tuple[tuple[int, ...], ...]:
        return self.profile

    def create_execution_context(self) -> Any:
        ctx = FakeContext(self)
        self.contexts.append(ctx)
        return Strict(self.api, "IExecutionContext", ctx) if self.api else ctx


def make_fake_trt(profile: tuple[tuple[int, ...], ...], label: str = "10.3") -> tuple[TopLevel, list[FakeEngine]]:
    """The runtime's part of ``tensorrt`` at release ``label``: strict names, behaviour from above."""
    api = Api(label)

    class ILogger:
        def __init__(self) -> None:
            pass

    engines: list[FakeEngine] = []

    class Runtime:
        def __init__(self, logger: Any) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, serialized: bytes) -> Strict | None:
            if not serialized.startswith(b"FAKEENGINE"):
                self.logger.log(SimpleNamespace(name="ERROR"), "Serialization assertion failed: magic tag")
                return None
            engines.append(FakeEngine(profile, api))
            return Strict(api, "ICudaEngine", engines[-1])

    module = TopLevel(
        api,
        {
            "__version__": VERSIONS[label],
            "ILogger": ILogger,
            "Runtime": lambda logger: Strict(api, "Runtime", Runtime(logger)),
            "TensorIOMode": SimpleNamespace(INPUT="IN", OUTPUT="OUT"),
            "nptype": lambda dtype: np.float32,
        },
    )
    return module, engines


PROFILE = ((1, 1, 8, 8), (4, 1, 8, 8), (8, 1, 8, 8))
DEVICE = DeviceInfo("Orin", "8.7")


def write_engine(tmp_path: Path, serialized: bytes = b"FAKEENGINE" + bytes(100), version: str = "10.3.0") -> Path:
    engine = tmp_path / "nano.best.engine"
    engine.write_bytes(serialized)
    info = ArtifactInfo(ViTConfig(), Preprocess(8, 1, (0.0,), (1.0,)), [f"c{i}" for i in range(10)], precision="best")
    Manifest(
        engine_file=engine.name,
        engine_sha256=sha256_file(engine),
        engine_bytes=len(serialized),
        tensorrt_version=version,
        tensorrt_module="tensorrt",
        device=DEVICE,
        precision="best",
        build_mode="builder-flags",
        profile={"min": list(PROFILE[0]), "opt": list(PROFILE[1]), "max": list(PROFILE[2])},
        io=[
            TensorSpec("images", "input", [-1, 1, 8, 8], "float32"),
            TensorSpec("logits", "output", [-1, 10], "float32"),
        ],
        source_onnx="model.int8.onnx",
        source_sha256="00" * 32,
        artifact=info,
        rebuild_command="edgevit build model.int8.onnx --precision best",
    ).save(manifest_path(engine))
    return engine


@pytest.fixture(params=list(VERSIONS))
def fakes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """TensorRT (one release's API) and cuda-python doubles, patched into the backend."""
    from edgevit.runtime import trt_backend
    from edgevit.trt.trtapi import TrtVersion

    label = request.param
    trt, engines = make_fake_trt(PROFILE, label)
    cudart = FakeCudart()
    monkeypatch.setattr(trt_backend, "import_tensorrt", lambda: (trt, TrtVersion.parse(VERSIONS[label])))
    monkeypatch.setattr(trt_backend, "detect_device", lambda index=0: DEVICE)
    monkeypatch.setattr(trt_backend, "import_cudart", lambda: cudart)
    return SimpleNamespace(trt=trt, engines=engines, cudart=cudart, label=label)


def expected(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1)[:, :10] * 2.0 + 1.0


def test_runner_batches_splits_and_frees(fakes: SimpleNamespace, tmp_path: Path) -> None:
    from edgevit.runtime.trt_backend import TensorRTRunner
    from edgevit.trt.manifest import load_manifest

    engine = write_engine(tmp_path, version=VERSIONS[fakes.label])
    x = np.random.default_rng(0).standard_normal((19, 1, 8, 8)).astype(np.float32)
    with TensorRTRunner(engine, load_manifest(engine), trt=fakes.trt, cudart=fakes.cudart) as runner:
        assert runner.max_batch == 8 and runner.input_name == "images" and runner.output_names == ["logits"]
        assert len(fakes.cudart.blocks) == 4  # pinned + device buffer for input and output
        sizes = {len(b) for b in fakes.cudart.blocks.values()}
        assert sizes == {8 * 64 * 4, 8 * 10 * 4}  # sized for the profile's max batch
        (out,) = runner.infer({"images": x})
        np.testing.assert_allclose(out, expected(x), rtol=1e-6)
        ctx = fakes.engines[0].contexts[0]
        assert ctx.runs == [8, 8, 3]  # larger than the profile: split; smaller: run as it is
        h2d = [n for kind, n in fakes.cudart.copies if kind == 1]
        assert h2d == [8 * 64 * 4, 8 * 64 * 4, 3 * 64 * 4]  # only the live part is copied
        (one,) = runner.infer({"images": x[:1]})
        np.testing.assert_allclose(one, expected(x[:1]), rtol=1e-6)
        with pytest.raises(InputError, match="expects N x 1 x 8 x 8"):
            runner.infer({"images": x[:, :, :4]})
    assert fakes.cudart.blocks == {} and fakes.cudart.streams == set()  # everything released
    with pytest.raises(BackendError, match="closed"):
        runner.infer({"images": x})
    runner.close()  # idempotent


def test_batches_below_the_profile_minimum_are_padded(fakes: SimpleNamespace, tmp_path: Path) -> None:
    from edgevit.runtime.trt_backend import TensorRTRunner
    from edgevit.trt.manifest import load_manifest

    fakes.trt, fakes.engines = make_fake_trt(((4, 1, 8, 8), (4, 1, 8, 8), (8, 1, 8, 8)), fakes.label)
    engine = write_engine(tmp_path, version=VERSIONS[fakes.label])
    x = np.random.default_rng(1).standard_normal((2, 1, 8, 8)).astype(np.float32)
    with TensorRTRunner(engine, load_manifest(engine), trt=fakes.trt, cudart=fakes.cudart) as runner:
        (out,) = runner.infer({"images": x})
    assert out.shape == (2, 10)
    np.testing.assert_allclose(out, expected(x), rtol=1e-6)
    assert fakes.engines[0].contexts[0].runs == [4]


def test_cuda_errors_are_checked_and_nothing_leaks(fakes: SimpleNamespace, tmp_path: Path) -> None:
    from edgevit.runtime.trt_backend import TensorRTRunner
    from edgevit.trt.manifest import load_manifest

    engine = write_engine(tmp_path, version=VERSIONS[fakes.label])
    fakes.cudart.fail = "device"
    with pytest.raises(BackendError, match=r"cudaMalloc\(images\) failed: cudaErrorMemoryAllocation"):
        TensorRTRunner(engine, load_manifest(engine), trt=fakes.trt, cudart=fakes.cudart)
    assert fakes.cudart.blocks == {} and fakes.cudart.streams == set()
    fakes.cudart.fail = "memcpy"
    runner = TensorRTRunner(engine, load_manifest(engine), trt=fakes.trt, cudart=fakes.cudart)
    with pytest.raises(BackendError, match="cudaMemcpyAsync"):
        runner.infer({"images": np.zeros((2, 1, 8, 8), np.float32)})
    runner.close()
    assert fakes.cudart.blocks == {}


def test_runtime_load_gives_the_predict_api(fakes: SimpleNamespace, tmp_path: Path) -> None:
    """`edgevit.runtime.load("x.engine")` -> Model with predict, rebuilt from the manifest alone (no ONNX)."""
    from edgevit import runtime

    engine = write_engine(tmp_path, version=VERSIONS[fakes.label])
    images = np.random.default_rng(2).integers(0, 256, size=(11, 8, 8, 1), dtype=np.uint8)
    with runtime.load(engine, batch_size=32) as model:
        assert model.backend == f"tensorrt:{VERSIONS[fakes.label]}" and model.batch_size == 8  # capped by the profile
        pred = model.predict(images, top_k=3)
        assert len(pred) == 11 and pred.labels[0][0].startswith("c")
        x = images.astype(np.float32).transpose(0, 3, 1, 2)  # mean 0, std 1 preprocessing
        np.testing.assert_allclose(pred.logits, expected(x / 255.0), rtol=1e-5)


def test_unreadable_plan_is_an_artifact_error(fakes: SimpleNamespace, tmp_path: Path) -> None:
    from edgevit import runtime
    from edgevit.errors import ArtifactError

    engine = write_engine(tmp_path, serialized=b"NOTANENGINE" * 10, version=VERSIONS[fakes.label])
    with pytest.raises(ArtifactError, match=r"could not deserialize.*magic tag.*edgevit build"):
        runtime.load(engine)


# ---------------------------------------------------------------------------------------------
# Part 2: a real TensorRT and CUDA device
# ---------------------------------------------------------------------------------------------

PROBE = textwrap.dedent(
    """
    import sys
    try:
        import tensorrt as trt
    except Exception as exc:
        print("TensorRT is not importable:", str(exc).splitlines()[0] if str(exc) else type(exc).__name__); sys.exit(3)
    try:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart
    except Exception as exc:
        print("cuda-python is not installed:", exc); sys.exit(4)
    err, count = cudart.cudaGetDeviceCount()
    if int(getattr(err, "value", err)) != 0 or not count:
        print("no CUDA device:", getattr(err, "name", err)); sys.exit(5)
    builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
    if builder is None:
        print("TensorRT could not create a builder"); sys.exit(6)
    print("ok TensorRT", trt.__version__)
    """
)


@pytest.fixture(scope="session")
def trt_device() -> str:
    """Skip (with the reason) unless TensorRT and a CUDA device start in a child process."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, env={**os.environ}
        )
    except subprocess.TimeoutExpired:
        pytest.skip("TensorRT probe timed out after 120 s")
    out = (proc.stdout.strip().splitlines() or [""])[-1]
    if proc.returncode < 0:
        pytest.skip(f"TensorRT crashed while starting (signal {-proc.returncode}): no usable GPU here")
    if proc.returncode != 0 or not out.startswith("ok"):
        pytest.skip(out or (proc.stderr.strip().splitlines() or ["TensorRT probe failed"])[-1][:200])
    return out


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("source", "precision"), [("fp32", "fp32"), ("fp32", "fp16"), ("int8", "int8"), ("int8", "best")]
)
def test_engine_matches_onnxruntime(
    trt_device: str,
    nano_artifacts: Any,
    digits_test_images: Any,
    tmp_path: Path,
    source: str,
    precision: str,
    record_property: Any,
) -> None:
    """Build a nano engine on this device, run it, compare with ONNX Runtime on the same images."""
    from edgevit import runtime
    from edgevit.engine.build import build_engine
    from edgevit.engine.options import BuildOptions

    src = Path(nano_artifacts.fp32_onnx if source == "fp32" else nano_artifacts.int8_onnx)
    result = build_engine(BuildOptions(onnx=src, precision=precision, batch_profile=(1, 16, 64), engines_dir=tmp_path))
    assert result.engine is not None and result.manifest is not None
    images, labels = digits_test_images
    with runtime.load(src) as ref, runtime.load(result.engine, batch_size=64) as trt_model:
        a = ref.predict(images, top_k=1)
        b = trt_model.predict(images, top_k=1)
    agree = float((a.top1 == b.top1).mean())
    max_abs = float(np.abs(a.logits - b.logits).max())
    report = {
        "precision": precision,
        "top1_agreement": agree,
        "max_abs_diff": max_abs,
        "trt_acc": float((b.top1 == labels).mean()),
        "check": result.manifest.precision_check,
    }
    record_property("trt_vs_ort", json.dumps(report))
    print("TensorRT vs ONNX Runtime:", report)
    assert agree >= (0.99 if precision in ("fp32", "fp16") else 0.97)
    assert max_abs < (1e-3 if precision == "fp32" else 0.5)


@pytest.mark.gpu
def test_implicit_int8_from_calibration_cache(
    trt_device: str, nano_artifacts: Any, digits_test_images: Any, tmp_path: Path
) -> None:
    """TensorRT 8.x-10.x: FP32 ONNX + the cache of `edgevit quantize`, no calibration on the device."""
    from edgevit import runtime
    from edgevit.engine.build import build_engine
    from edgevit.engine.options import BuildOptions
    from edgevit.trt.trtapi import import_tensorrt

    _, version = import_tensorrt()
    if not version.has_implicit_int8:
        pytest.skip(f"{version} has no implicit INT8 (removed in TensorRT 11)")
    opts = BuildOptions(
        onnx=Path(nano_artifacts.fp32_onnx),
        precision="int8",
        calib_cache=Path(nano_artifacts.trt_cache),
        engines_dir=tmp_path,
    )
    result = build_engine(opts)
    assert result.manifest.build_mode == "implicit-int8"
    images, _ = digits_test_images
    with runtime.load(nano_artifacts.fp32_onnx) as ref, runtime.load(result.engine) as model:
        agree = float((ref.predict(images, top_k=1).top1 == model.predict(images, top_k=1).top1).mean())
    print("implicit INT8 top-1 agreement with ONNX Runtime FP32:", agree, result.manifest.precision_check)
    assert agree >= 0.95


@pytest.mark.gpu
def test_device_refuses_foreign_engine(trt_device: str, nano_artifacts: Any, tmp_path: Path) -> None:
    """An engine whose manifest names another TensorRT version is refused before deserialization."""
    from edgevit import runtime
    from edgevit.engine.build import build_engine
    from edgevit.engine.options import BuildOptions
    from edgevit.errors import ArtifactError

    result = build_engine(BuildOptions(onnx=Path(nano_artifacts.int8_onnx), precision="int8", engines_dir=tmp_path))
    mpath = manifest_path(result.engine)
    data = json.loads(mpath.read_text())
    data["tensorrt_version"] = "7.0.0"
    mpath.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="rebuild on this device"):
        runtime.load(result.engine)


@pytest.mark.gpu
def test_timing_cache_is_kept_and_reused(trt_device: str, nano_artifacts: Any, tmp_path: Path) -> None:
    from edgevit.engine.build import build_engine
    from edgevit.engine.options import BuildOptions

    opts = BuildOptions(onnx=Path(nano_artifacts.fp32_onnx), precision="fp16", engines_dir=tmp_path)
    first = build_engine(opts)
    cache = Path(first.manifest.settings["timing_cache"])
    assert cache.is_file() and cache.is_relative_to(tmp_path)
    second = build_engine(opts)
    assert second.manifest.settings["timing_cache"] == str(cache)


@pytest.mark.gpu
def test_dla_engine_reports_its_placement(trt_device: str, nano_artifacts: Any, tmp_path: Path) -> None:
    """Xavier / AGX Orin / Orin NX: a static-batch DLA build says what runs on the DLA, or is refused."""
    from edgevit.engine.build import build_engine
    from edgevit.engine.options import BuildOptions
    from edgevit.errors import BackendError
    from edgevit.trt.device import detect_device
    from edgevit.trt.trtapi import import_tensorrt

    trt, version = import_tensorrt()
    builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
    device = detect_device()
    if not getattr(builder, "num_DLA_cores", 0) or version.dla_refusal(device.jetson.model if device.jetson else ""):
        pytest.skip(f"no DLA usable here ({device.describe()}, {version})")
    opts = BuildOptions(
        onnx=Path(nano_artifacts.int8_onnx), precision="int8", dla_core=0, batch_profile=(8, 8, 8), engines_dir=tmp_path
    )
    try:
        result = build_engine(opts)
    except BackendError as exc:  # a ViT may put nothing on the DLA: that must be said, not hidden
        assert "no layer of this model runs on the DLA" in str(exc)
        return
    dla = result.manifest.dla
    print("DLA placement:", dla)
    assert dla["dla_capable_layers"] > 0 and dla["network_layers"] > dla["dla_capable_layers"]
