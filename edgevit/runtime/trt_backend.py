"""TensorRT backend: run an engine built by ``edgevit build`` with the same ``predict`` API
as the ONNX Runtime backend. No torch, no pycuda: memory goes through cuda-python
(``cuda.bindings.runtime``), and every CUDA call's error code is checked.

One engine, one execution context, one CUDA stream; device buffers and pinned host buffers
are sized once for the optimization profile's largest batch. Calls are serialized with a
lock, so a runner may be shared between threads. Batches larger than the profile are split;
smaller ones run as they are (padded up to the profile's minimum when it is above 1).
"""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import numpy as np

from edgevit.errors import ArtifactError, BackendError, InputError
from edgevit.runtime.base import Model
from edgevit.trt.cudart import check, import_cudart, stream_handle
from edgevit.trt.device import detect_device
from edgevit.trt.manifest import Manifest, check_compatible, load_manifest
from edgevit.trt.trtapi import import_tensorrt, make_logger


class _Buffer:
    """A pinned host buffer (as a numpy array) and a device buffer of the same size."""

    def __init__(self, cudart: ModuleType, nbytes: int, dtype: np.dtype, name: str):
        self.cudart = cudart
        self.name = name
        self.nbytes = int(nbytes)
        self.dtype = np.dtype(dtype)
        self.host_ptr = 0
        self.device_ptr = 0
        self.host_ptr = int(check(cudart.cudaMallocHost(self.nbytes), f"cudaMallocHost({name})"))
        try:
            self.device_ptr = int(check(cudart.cudaMalloc(self.nbytes), f"cudaMalloc({name})"))
        except BackendError:
            self.free()
            raise
        count = self.nbytes // self.dtype.itemsize
        raw = (ctypes.c_byte * self.nbytes).from_address(self.host_ptr)
        self.host = np.frombuffer(raw, dtype=self.dtype, count=count)

    def free(self) -> None:
        if self.device_ptr:
            ptr, self.device_ptr = self.device_ptr, 0
            check(self.cudart.cudaFree(ptr), f"cudaFree({self.name})")
        if self.host_ptr:
            ptr, self.host_ptr = self.host_ptr, 0
            self.host = np.empty(0, dtype=self.dtype)
            check(self.cudart.cudaFreeHost(ptr), f"cudaFreeHost({self.name})")


class TensorRTRunner:
    """Runs a deserialized TensorRT engine (TensorRT 8.5+ tensor API).

    Args:
        path: the engine file.
        manifest: its manifest (already checked against this device).
        trt, cudart: the modules to use (tests inject doubles); imported when None.
    """

    def __init__(
        self, path: str | Path, manifest: Manifest, trt: ModuleType | None = None, cudart: ModuleType | None = None
    ):
        self.path = Path(path)
        if trt is None:
            trt, _ = import_tensorrt()
        self.trt = trt
        self.cudart = cudart if cudart is not None else import_cudart()
        self._lock = threading.Lock()
        self._buffers: dict[str, _Buffer] = {}
        self._stream: Any = None
        self.context: Any = None
        self.engine: Any = None
        self._logger = make_logger(trt, "ERROR")
        self.runtime = trt.Runtime(self._logger.trt_logger)
        serialized = self.path.read_bytes()
        self.engine = self.runtime.deserialize_cuda_engine(serialized)
        if self.engine is None:
            raise ArtifactError(
                f"TensorRT could not deserialize {self.path} ({self._logger.last_error() or 'no message'}); "
                f"rebuild it: {manifest.rebuild_command or 'edgevit build <model.onnx>'}"
            )
        try:
            self._setup(manifest)
        except BaseException:
            self.close()
            raise

    def _setup(self, manifest: Manifest) -> None:
        trt, engine = self.trt, self.engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if engine.get_tensor_mode(n) != trt.TensorIOMode.INPUT]
        if len(inputs) != 1 or not self.output_names:
            raise ArtifactError(
                f"{self.path} has inputs {inputs} and outputs {self.output_names}; expected one of each"
            )
        self.input_name = inputs[0]
        if self.input_name != manifest.input_spec.name:
            raise ArtifactError(
                f"{self.path} input is {self.input_name!r} but its manifest says {manifest.input_spec.name!r}"
            )
        mins, _opt, maxs = engine.get_tensor_profile_shape(self.input_name, 0)  # TensorRT 8.5+
        self.min_shape = tuple(int(d) for d in mins)
        self.max_shape = tuple(int(d) for d in maxs)
        self.min_batch = self.min_shape[0]
        self.max_batch: int | None = self.max_shape[0]
        self.name = f"tensorrt:{getattr(trt, '__version__', '?')}"
        self.context = engine.create_execution_context()
        if self.context is None:
            raise BackendError(
                f"TensorRT could not create an execution context for {self.path} (out of device memory?)"
            )
        self._stream = check(self.cudart.cudaStreamCreate(), "cudaStreamCreate")
        # Resolve every output's largest shape by setting the largest input shape once.
        if not self.context.set_input_shape(self.input_name, self.max_shape):
            raise BackendError(f"TensorRT refused input shape {self.max_shape} for {self.input_name}")
        for name in [self.input_name, *self.output_names]:
            shape = tuple(int(d) for d in self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise ArtifactError(f"{self.path}: tensor {name} has unresolved shape {shape}")
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            buf = _Buffer(self.cudart, int(np.prod(shape)) * dtype.itemsize, dtype, name)
            self._buffers[name] = buf
            if not self.context.set_tensor_address(name, buf.device_ptr):
                raise BackendError(f"TensorRT refused the device address of {name}")

    # -- Runner protocol -------------------------------------------------------------------------
    def infer(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self.context is None:
            raise BackendError(f"the TensorRT runner for {self.path} is closed")
        if self.input_name not in feed:
            raise InputError(f"feed has {sorted(feed)}; this engine's input is {self.input_name!r}")
        x = np.asarray(feed[self.input_name])
        if x.ndim != len(self.max_shape) or tuple(x.shape[1:]) != self.max_shape[1:]:
            raise InputError(
                f"input has shape {tuple(x.shape)}; the engine expects N x {' x '.join(map(str, self.max_shape[1:]))}"
            )
        n = int(x.shape[0])
        if n == 0:
            raise InputError("got an empty batch; pass at least one image")
        step = int(self.max_batch or n)
        parts: list[list[np.ndarray]] = [[] for _ in self.output_names]
        with self._lock:
            for start in range(0, n, step):
                outs = self._run(x[start : start + step])
                for i, o in enumerate(outs):
                    parts[i].append(o)
        return [np.concatenate(p, axis=0) if len(p) > 1 else p[0] for p in parts]

    def _run(self, chunk: np.ndarray) -> list[np.ndarray]:
        cudart = self.cudart
        kind_h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        kind_d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        n = chunk.shape[0]
        run_n = max(n, self.min_batch)
        inp = self._buffers[self.input_name]
        shape = (run_n, *self.max_shape[1:])
        count = int(np.prod(shape))
        view = inp.host[:count].reshape(shape)
        view[:n] = chunk  # converts to the engine's input dtype (float32) while copying
        if run_n > n:
            view[n:] = 0
        if not self.context.set_input_shape(self.input_name, shape):
            raise BackendError(f"TensorRT refused input shape {shape} (profile {self.min_shape} .. {self.max_shape})")
        check(
            cudart.cudaMemcpyAsync(inp.device_ptr, inp.host_ptr, count * inp.dtype.itemsize, kind_h2d, self._stream),
            "cudaMemcpyAsync(H2D)",
        )
        if not self.context.execute_async_v3(self._stream_handle()):
            raise BackendError(
                f"TensorRT execute_async_v3 failed on a batch of {run_n}: {self._logger.last_error() or 'no message'}"
            )
        shapes = []
        for name in self.output_names:
            out = self._buffers[name]
            oshape = tuple(int(d) for d in self.context.get_tensor_shape(name))
            ocount = int(np.prod(oshape))
            check(
                cudart.cudaMemcpyAsync(
                    out.host_ptr, out.device_ptr, ocount * out.dtype.itemsize, kind_d2h, self._stream
                ),
                "cudaMemcpyAsync(D2H)",
            )
            shapes.append((out, oshape, ocount))
        check(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return [out.host[:ocount].reshape(oshape)[:n].astype(np.float32, copy=True) for out, oshape, ocount in shapes]

    def _stream_handle(self) -> int:
        return stream_handle(self._stream)

    def close(self) -> None:
        errors = []
        for buf in self._buffers.values():
            try:
                buf.free()
            except BackendError as exc:  # keep freeing the rest
                errors.append(str(exc))
        self._buffers.clear()
        if self._stream is not None:
            stream, self._stream = self._stream, None
            try:
                check(self.cudart.cudaStreamDestroy(stream), "cudaStreamDestroy")
            except BackendError as exc:
                errors.append(str(exc))
        self.context = None
        self.engine = None
        if errors:
            raise BackendError("; ".join(errors))

    def __enter__(self) -> TensorRTRunner:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def load_engine(path: str | Path, batch_size: int = 32, device_index: int = 0) -> Model:
    """Load ``path`` (an engine with its manifest beside it) as a :class:`Model`.

    Raises:
        ArtifactError: missing or mismatched manifest, truncated engine, or an engine built for
            another TensorRT version or GPU (the message says how to rebuild).
        BackendError: TensorRT or cuda-python missing, or no CUDA device.
    """
    path = Path(path)
    manifest = load_manifest(path)
    trt, version = import_tensorrt()
    device = detect_device(device_index)
    check_compatible(manifest, version.text, device, path)
    runner = TensorRTRunner(path, manifest, trt=trt)
    return Model(runner, manifest.artifact, path=path, batch_size=batch_size)
