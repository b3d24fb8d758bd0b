"""``edgevit serve``: a real Triton Inference Server for one artifact, started in this
process through PyTriton.

PyTriton runs Triton's own ``tritonserver`` binary (HTTP, gRPC, Prometheus metrics, the
dynamic batcher) as a child process; the model itself runs here, in Python, through
:class:`~edgevit.serve.core.InferenceCore` on :mod:`edgevit.runtime` models, one per
Triton model instance.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import socket
import sysconfig
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from edgevit.errors import BackendError, EdgeVitError, InputError
from edgevit.serve.core import IMAGES, PROBS, TENSOR, TOP_K, InferenceCore
from edgevit.serve.deps import require

LOG_TAIL_LINES = 20
DEFAULT_MAX_BATCH = 32


def check_preferred(sizes: Sequence[int], max_batch: int) -> None:
    bad = [b for b in sizes if b < 1 or b > max_batch]
    if bad:
        raise InputError(f"preferred batch sizes {bad} must be between 1 and max batch {max_batch}")


@dataclass
class ServeConfig:
    """How ``edgevit serve`` runs.

    Args:
        host: address every endpoint binds to (``127.0.0.1``: this machine only;
            ``0.0.0.0``: every interface).
        http_port, grpc_port, metrics_port: Triton's three ports.
        max_batch: Triton's ``max_batch_size``; ``None``: 32, or a TensorRT engine profile's
            max batch when that is smaller (a larger explicit value is refused).
        dynamic_batching: let Triton's dynamic batcher merge concurrent requests.
        max_queue_delay_us: longest a request waits for others to join its batch.
        preferred_batch_sizes: batch sizes the batcher aims for (each <= ``max_batch``).
        instances: model instances (each a separately loaded model, run in parallel).
        top_k: classes returned per image.
        model_name: the name clients use (default: from the artifact's file name).
        provider, threads: ONNX Runtime execution provider and CPU threads per instance.
    """

    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_batch: int | None = None
    dynamic_batching: bool = True
    max_queue_delay_us: int = 500
    preferred_batch_sizes: list[int] = field(default_factory=list)
    instances: int = 1
    top_k: int = 5
    model_name: str | None = None
    provider: str = "cpu"
    threads: int | None = None

    def check(self) -> None:
        if self.max_batch is not None and self.max_batch < 1:
            raise InputError(f"--max-batch must be at least 1, got {self.max_batch}")
        if self.instances < 1:
            raise InputError(f"--instances must be at least 1, got {self.instances}")
        if self.max_queue_delay_us < 0:
            raise InputError(f"--max-queue-delay-us must be 0 or more, got {self.max_queue_delay_us}")
        if self.top_k < 1:
            raise InputError(f"--top-k must be at least 1, got {self.top_k}")
        check_preferred(self.preferred_batch_sizes, self.max_batch or DEFAULT_MAX_BATCH)
        ports = [self.http_port, self.grpc_port, self.metrics_port]
        if len(set(ports)) != 3 or any(not 0 < p < 65536 for p in ports):
            raise InputError(f"HTTP, gRPC and metrics ports must be three different ports in 1-65535, got {ports}")


def model_name_for(path: str | Path) -> str:
    """``runs/digits-nano/model.int8.onnx`` -> ``model_int8`` (Triton allows [A-Za-z0-9._-])."""
    stem = Path(path).name
    for suffix in (".onnx", ".engine", ".plan"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_")
    return name or "edgevit"


def check_model_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise InputError(f"model name {name!r} may only contain letters, digits, '.', '_' and '-'")
    return name


def error_summary(exc: BaseException, limit: int = 400) -> str:
    """The informative line of a Triton error (they carry whole Python tracebacks)."""
    lines = [ln.strip() for ln in str(exc).replace("\\n", "\n").splitlines() if ln.strip()]
    for line in reversed(lines):
        if re.match(r"^[A-Za-z_.]*(Error|Exception)\b", line):
            return line[:limit]
    return (lines[0] if lines else type(exc).__name__)[:limit]


def remove_triton_model_copies(workspace: str) -> None:
    """Triton copies a model loaded with an inline config to ``$TMPDIR/folderXXXXXX`` and does not
    always remove it at exit. Remove the copies of this server's model only: the ones whose
    ``config.pbtxt`` names this server's PyTriton workspace (unique per server)."""
    if not workspace:
        return
    for tmp in {Path(tempfile.gettempdir()), Path("/tmp")}:
        for folder in tmp.glob("folder*"):
            config = folder / "config.pbtxt"
            try:
                if config.is_file() and f'"{workspace}"' in config.read_text(errors="replace"):
                    shutil.rmtree(folder, ignore_errors=True)
            except OSError:
                continue


def check_ports_free(host: str, ports: Sequence[int]) -> None:
    """Refuse ports another process holds before Triton starts (Triton would exit)."""
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError as exc:
                raise InputError(
                    f"cannot listen on {host}:{port} ({exc.strerror}); pick free ports with "
                    "--http-port/--grpc-port/--metrics-port"
                ) from exc


@contextlib.contextmanager
def own_libpython_first() -> Iterator[None]:
    """Put this interpreter's own library folder first on ``LD_LIBRARY_PATH`` while Triton
    starts, so Triton's Python-backend stub loads the same ``libpython`` as this process
    (a venv made from a separately built Python otherwise gets the system's library and the
    model fails to load with ``'_thread.RLock' object has no attribute '_recursion_count'``)."""
    libdir = sysconfig.get_config_var("LIBDIR")
    old = os.environ.get("LD_LIBRARY_PATH")
    if libdir and Path(libdir).is_dir():
        parts = [p for p in (old or "").split(os.pathsep) if p and p != libdir]
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([libdir, *parts])
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("LD_LIBRARY_PATH", None)
        else:
            os.environ["LD_LIBRARY_PATH"] = old


class TritonModelServer:
    """One artifact behind a Triton Inference Server (PyTriton), as a context manager.

    >>> with TritonModelServer("model.int8.onnx", ServeConfig(http_port=8000)) as server:
    ...     server.wait()   # until stop() is called (a signal handler) or Triton dies

    Raises :class:`BackendError` when PyTriton is missing or Triton fails to start.
    """

    def __init__(self, artifact: str | Path, config: ServeConfig | None = None):
        self.artifact = Path(artifact)
        self.config = config or ServeConfig()
        self.config.check()
        self.name = check_model_name(self.config.model_name or model_name_for(self.artifact))
        self.models: list[Any] = []
        self.cores: list[InferenceCore] = []
        self.max_batch = self.config.max_batch or DEFAULT_MAX_BATCH
        self._triton: Any = None
        self._workspace = ""  # PyTriton's per-server workspace, named in the model config Triton copies
        self._stop = threading.Event()
        self.stopped_by = ""

    # -- endpoints ----------------------------------------------------------------
    @property
    def http_url(self) -> str:
        return f"{self._client_host}:{self.config.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self._client_host}:{self.config.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self._client_host}:{self.config.metrics_port}/metrics"

    @property
    def _client_host(self) -> str:
        return "127.0.0.1" if self.config.host in ("0.0.0.0", "") else self.config.host

    @property
    def class_names(self) -> list[str]:
        return list(self.models[0].class_names) if self.models else []

    # -- life cycle ----------------------------------------------------------------
    def start(self) -> TritonModelServer:
        from edgevit import runtime

        triton_mod = require("pytriton.triton", "edgevit serve")
        mc = require("pytriton.model_config", "edgevit serve")
        cfg = self.config
        for logger in ("pytriton", "sh"):
            logging.getLogger(logger).setLevel(logging.WARNING if os.environ.get("EDGEVIT_SERVE_DEBUG") else 60)
        try:
            check_ports_free(cfg.host, [cfg.http_port, cfg.grpc_port, cfg.metrics_port])
            for _ in range(cfg.instances):
                self.models.append(
                    runtime.load(self.artifact, provider=cfg.provider, threads=cfg.threads, batch_size=self.max_batch)
                )
            model = self.models[0]
            runner_max = model.runner.max_batch
            if runner_max and cfg.max_batch is None:
                self.max_batch = min(self.max_batch, runner_max)
                check_preferred(cfg.preferred_batch_sizes, self.max_batch)
            if runner_max and self.max_batch > runner_max:
                raise InputError(
                    f"--max-batch {self.max_batch} is larger than {self.artifact.name}'s optimization profile "
                    f"(max batch {runner_max}); pass --max-batch {runner_max} or rebuild the engine with a larger profile"
                )
            self.cores = [InferenceCore(m, cfg.top_k) for m in self.models]
            pre = model.preprocess
            k = self.cores[0].top_k
            batcher = (
                mc.DynamicBatcher(
                    max_queue_delay_microseconds=cfg.max_queue_delay_us,
                    preferred_batch_size=list(cfg.preferred_batch_sizes) or None,
                )
                if cfg.dynamic_batching
                else None
            )
            model_config = mc.ModelConfig(batching=True, max_batch_size=self.max_batch, batcher=batcher)
            triton_config = triton_mod.TritonConfig(
                http_address=cfg.host,
                grpc_address=cfg.host,
                metrics_address=cfg.host,
                http_port=cfg.http_port,
                grpc_port=cfg.grpc_port,
                metrics_port=cfg.metrics_port,
                exit_timeout_secs=5,
            )
            self._triton = triton_mod.Triton(config=triton_config)
            self._triton.bind(
                model_name=self.name,
                infer_func=[self._infer_fn(core) for core in self.cores],
                inputs=[
                    mc.Tensor(name=IMAGES, dtype=np.uint8, shape=(-1, -1, pre.channels), optional=True),
                    mc.Tensor(name=TENSOR, dtype=np.float32, shape=pre.input_shape, optional=True),
                ],
                outputs=[
                    mc.Tensor(name=PROBS, dtype=np.float32, shape=(model.num_classes,)),
                    mc.Tensor(name=TOP_K, dtype=np.int64, shape=(k,)),
                ],
                config=model_config,
                strict=False,
            )
            self._add_parameters(self._metadata())
            try:
                with own_libpython_first():
                    self._triton.run()
            except EdgeVitError:
                raise
            except Exception as exc:  # PyTriton and tritonclient raise their own types
                raise BackendError(
                    f"Triton could not start or load model '{self.name}': {error_summary(exc)} "
                    "(set EDGEVIT_SERVE_DEBUG=1 for PyTriton's log)"
                ) from exc
            if not self._triton.is_alive():
                raise BackendError(f"Triton stopped while loading {self.name}: {self.log_tail()}")
        except BaseException:
            self.stop()
            raise
        return self

    def _infer_fn(self, core: InferenceCore) -> Any:
        def infer(requests: Sequence[Any]) -> list[dict[str, np.ndarray]]:
            return core(requests)

        return infer

    def _metadata(self) -> dict[str, str]:
        info = self.models[0].info
        return {
            "edgevit.class_names": json.dumps(self.class_names),
            "edgevit.preprocess": json.dumps(info.preprocess.to_dict(), sort_keys=True),
            "edgevit.precision": info.precision,
            "edgevit.backend": self.models[0].backend,
            "edgevit.artifact": self.artifact.name,
            "edgevit.top_k": str(self.cores[0].top_k),
        }

    def _add_parameters(self, params: dict[str, str]) -> None:
        """Class names and preprocessing into the model config's ``parameters`` (read with
        ``get_model_config``). PyTriton has no public hook for this, so reach its generated
        config; if a PyTriton release moves it, serve without them rather than fail."""
        try:
            for bound in self._triton._model_manager.models:
                backend_parameters = bound._get_triton_model_config().backend_parameters
                backend_parameters.update(params)
                self._workspace = str(backend_parameters.get("workspace-path", ""))
        except AttributeError:  # pragma: no cover - depends on the PyTriton release
            logging.getLogger(__name__).warning("this PyTriton cannot add parameters; class names are not served")

    def wait(self, poll_s: float = 0.5) -> str:
        """Block until :meth:`request_stop` is called or Triton stops; returns why."""
        while not self._stop.wait(poll_s):
            if self._triton is None or not self._triton.is_alive():
                return "triton-exited"
        return self.stopped_by or "stopped"

    def request_stop(self, reason: str = "stopped") -> None:
        """Ask :meth:`wait` to return (safe from a signal handler)."""
        self.stopped_by = self.stopped_by or reason
        self._stop.set()

    def stop(self) -> None:
        """Stop Triton (in-flight requests get up to 5 s) and close the models."""
        self._stop.set()
        triton, self._triton = self._triton, None
        if triton is not None:
            try:
                triton.stop()
            except Exception as exc:  # pragma: no cover - Triton already gone
                logging.getLogger(__name__).debug("stopping Triton: %s", exc)
            remove_triton_model_copies(self._workspace)
        for model in self.models:
            model.close()
        self.models = []

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        server = getattr(self._triton, "_triton_server", None)
        text = server.logs() if server is not None else ""
        tail = [ln for ln in text.splitlines() if ln.strip()][-lines:]
        return " | ".join(tail) or "no Triton log"

    def __enter__(self) -> TritonModelServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
