"""``edgevit serve``: a real Triton Inference Server for one artifact, started in this
process through PyTriton.

PyTriton runs Triton's own ``tritonserver`` binary (HTTP, gRPC, Prometheus metrics, the
dynamic batcher) as a child process; the model itself runs here, in Python, through
:class:`~edgevit.serve.core.InferenceCore` on :mod:`edgevit.runtime` models, one per
Triton model instance.

Three things PyTriton does not do the way a server must, and what this module does about them:

* Readiness. PyTriton starts Triton with an empty model repository and loads the model
  through Triton's API afterwards, so ``/v2/health/ready`` answers 200 before the model
  exists. Here the model is written into the repository before Triton starts
  (PyTriton's ``local_model_store`` life cycle): Triton loads it at startup and opens its
  ports only when it is loaded, and Triton's strict readiness holds.
* One bad request in a batch. PyTriton's batch handler (its ``proxy/model.py``, run by
  Triton's Python-backend stub) answers a batch with results for every request or one
  error for all. The Python backend itself can answer each request with its own error
  (``InferenceResponse(error=TritonError(msg, INVALID_ARG))``: HTTP 400, gRPC
  INVALID_ARGUMENT). :data:`REQUEST_HOOK` adds that to the copy of PyTriton's handler
  that goes into the repository; the request's own one-line message is all the client
  sees. The same hook keeps an input with no elements (a 0 x 0 image), which PyTriton's
  shared-memory tensor store cannot carry, from failing its whole batch.
* Stopping under load. Triton waits for in-flight requests up to its exit timeout, then
  exits anyway and its Python-backend stub lives on. Here the model is unloaded first
  (in-flight requests finish, new ones are refused), then Triton is stopped, and whatever
  of its process tree is still running after a bounded wait is killed
  (:mod:`edgevit.serve.processes`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import sysconfig
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from edgevit.errors import BackendError, EdgeVitError, InputError
from edgevit.serve import processes
from edgevit.serve.core import IMAGES, PROBS, TENSOR, TOP_K, InferenceCore
from edgevit.serve.deps import require

LOG_TAIL_LINES = 20
DEFAULT_MAX_BATCH = 32
EXIT_TIMEOUT_S = 5  # Triton's wait for in-flight requests when it stops
STARTUP_TIMEOUT_S = 120.0  # Triton's start and its load of the proxy model (ours is loaded before), as PyTriton
STOP_GRACE_S = 5.0  # how long what is left of Triton's process tree gets before it is killed
ERROR = "edgevit_error"  # a response entry that REQUEST_HOOK turns into this request's own error
EMPTY = "edgevit_empty:"  # + input name: the shape of an input with no elements (REQUEST_HOOK)

REQUEST_HOOK = f"""

# ---- added by edgevit (edgevit/serve/server.py) ---------------------------------------
# One request of a batch fails alone. PyTriton's BatchResponsesHandler builds every response
# with _wrap_response() and fails a batch only as a whole; Triton's Python backend can fail
# one request (a response that carries an error). The inference callable marks a refused
# request with a '{ERROR}' entry holding its one-line message; that request gets the message
# as INVALID_ARG (HTTP 400, gRPC INVALID_ARGUMENT), the others their results.
# An input with no elements (a 0 x 0 image) cannot pass PyTriton's shared-memory tensor
# store (it fails the whole batch there); it is sent as its shape under '{EMPTY}<name>'
# and the inference callable refuses it like any other invalid request.
def _edgevit_errors_per_request(wrap):
    def _wrap_response(response, requested_outputs_names, model_outputs_dict):
        data = response.data
        if data is not None and "{ERROR}" in data:
            item = data["{ERROR}"].reshape(-1)[0]
            message = item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
            error = pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG)
            return pb_utils.InferenceResponse(output_tensors=[], error=error)
        return wrap(response, requested_outputs_names, model_outputs_dict)

    return _wrap_response


def _edgevit_empty_inputs_as_shapes(wrap):
    def _wrap_request(*args, **kwargs):
        import numpy

        request = wrap(*args, **kwargs)
        for name in [k for k, v in request.data.items() if getattr(v, "size", 1) == 0]:
            request.data["{EMPTY}" + name] = numpy.asarray(request.data.pop(name).shape, dtype=numpy.int64)
        return request

    return _wrap_request


_wrap_response = _edgevit_errors_per_request(_wrap_response)
TritonRequestsServer._wrap_request = _edgevit_empty_inputs_as_shapes(TritonRequestsServer._wrap_request)
"""
INPUT_DTYPES = {IMAGES: np.uint8, TENSOR: np.float32}


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
        backend, provider, precision, threads: how each instance loads the artifact
            (:func:`edgevit.runtime.load`'s ``backend``, ``provider``, ``precision``, ``threads``).
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
    backend: str = "auto"
    provider: str = "cpu"
    precision: str = "default"
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
    """A name Triton accepts that is also one folder of a model repository ('.' and '..'
    would write the repository's parent and serve a model no URL reaches)."""
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise InputError(f"model name {name!r} may only contain letters, digits, '.', '_' and '-'")
    if name in (".", ".."):
        raise InputError(f"model name {name!r} names a folder, not a model; pick a name with a letter or digit")
    return name


def error_summary(exc: BaseException, limit: int = 400) -> str:
    """The informative line of a Triton error (they carry whole Python tracebacks)."""
    lines = [ln.strip() for ln in str(exc).replace("\\n", "\n").splitlines() if ln.strip()]
    for line in reversed(lines):
        if re.match(r"^[A-Za-z_.]*(Error|Exception)\b", line):
            return line[:limit]
    return (lines[0] if lines else type(exc).__name__)[:limit]


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


def install_request_hook(model_py: Path) -> bool:
    """Append :data:`REQUEST_HOOK` to the repository copy of PyTriton's proxy model; False
    (and nothing written) when this PyTriton's proxy lacks the functions it wraps."""
    text = model_py.read_text(encoding="utf-8")
    needed = ("def _wrap_response(", "_wrap_response(response", "class TritonRequestsServer", "def _wrap_request(")
    if not all(n in text for n in needed):
        return False
    if REQUEST_HOOK not in text:
        model_py.write_text(text + REQUEST_HOOK, encoding="utf-8")
    return True


def restore_empty_inputs(request: Any) -> Any:
    """Undo :data:`REQUEST_HOOK`'s stand-in for an input with no elements: the input again,
    as an empty array of its shape, for :class:`InferenceCore` to refuse with its message."""
    for key in [k for k in request if isinstance(k, str) and k.startswith(EMPTY)]:
        name = key[len(EMPTY) :]
        shape = tuple(int(d) for d in np.asarray(request[key]).reshape(-1))
        del request[key]
        request[name] = np.zeros(shape, INPUT_DTYPES.get(name, np.float32))
    return request


def shm_region_prefix(triton_pid: int) -> str:
    """The name prefix of the shared memory regions of Triton's Python backend, from the
    ``python,shm-region-prefix-name=...`` argument PyTriton starts ``tritonserver`` with
    (unique per server: PyTriton adds a random part)."""
    key = b"shm-region-prefix-name="
    try:
        args = Path(f"/proc/{triton_pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return ""
    for arg in args:
        if key in arg:
            value = arg.split(key, 1)[1].split(b",")[0].decode(errors="replace")
            return value if re.fullmatch(r"[A-Za-z0-9_-]{8,}", value) else ""
    return ""


def http_status(url: str, method: str = "GET", headers: dict[str, str] | None = None, timeout: float = 2.0) -> int:
    """The HTTP status ``url`` answers with; 0 when nothing answers."""
    data = b"{}" if method == "POST" else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def triton_log_error(log: str) -> str:
    """The error line of Triton's log that says why it stopped ('' when there is none)."""
    noise = ("CudaDriverHelper", "config modification time", "pinned memory", "NVML", "DCGM")
    errors = []
    for line in log.splitlines():
        m = re.match(r'^E\d{4} [\d:.]+\s+\d+ [^\]]+\] "?(.*?)"?$', line.strip())
        if m and not any(n in m.group(1) for n in noise):
            errors.append(m.group(1))
    for line in errors:  # the model's own failure first: it names the cause
        if "failed to load" in line or "Model initialize error" in line:
            return error_summary(RuntimeError(line))
    return error_summary(RuntimeError(errors[-1])) if errors else ""


class TritonModelServer:
    """One artifact behind a Triton Inference Server (PyTriton), as a context manager.

    >>> with TritonModelServer("model.int8.onnx", ServeConfig(http_port=8000)) as server:
    ...     server.wait()   # until stop() is called (a signal handler) or Triton dies

    :meth:`start` returns once the model answers (Triton's ``/v2/health/ready`` and the
    model's own ready endpoint both say 200). Raises :class:`BackendError` when PyTriton is
    missing or Triton fails to start or to load the model.
    """

    def __init__(self, artifact: str | Path, config: ServeConfig | None = None):
        self.artifact = Path(artifact)
        self.config = config or ServeConfig()
        self.config.check()
        self.name = check_model_name(self.config.model_name or model_name_for(self.artifact))
        self.models: list[Any] = []
        self.cores: list[InferenceCore] = []
        self.max_batch = self.config.max_batch or DEFAULT_MAX_BATCH
        self.state = "new"  # starting -> ready -> stopping -> stopped
        self.per_request_errors = False  # REQUEST_HOOK is in the served model
        self.left_running: list[str] = []  # processes of Triton's tree that survived stop(); normally none
        self._triton: Any = None
        self._workspace = ""  # PyTriton's per-server workspace (model repository, sockets, Triton's binaries)
        self._procs: list[tuple[int, str]] = []  # Triton's process tree, recorded once the model was ready
        self._shm_prefix = ""  # names this server's Python-backend shared memory in /dev/shm
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
        self.state = "starting"
        try:
            check_ports_free(cfg.host, [cfg.http_port, cfg.grpc_port, cfg.metrics_port])
            for _ in range(cfg.instances):
                self.models.append(
                    runtime.load(
                        self.artifact,
                        backend=cfg.backend,
                        provider=cfg.provider,
                        precision=cfg.precision,
                        threads=cfg.threads,
                        batch_size=self.max_batch,
                    )
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
                exit_timeout_secs=EXIT_TIMEOUT_S,
                strict_readiness=True,
            )
            # The model goes into the repository before Triton starts: Triton loads it at
            # startup and opens its ports after, so "ready" means the model is.
            policy = triton_mod.TritonLifecyclePolicy(launch_triton_on_startup=False, local_model_store=True)
            self._triton = triton_mod.Triton(config=triton_config, triton_lifecycle_policy=policy)
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
            self._write_repository_model(self._metadata())
            self._launch()
        except BaseException:
            self.stop()
            raise
        self.state = "ready"
        return self

    def _launch(self) -> None:
        """Start Triton, wait until it has loaded the model, connect PyTriton's handlers."""
        run_server = getattr(self._triton, "_run_server", None)  # Triton.run() is _run_server() + connect()
        try:
            with own_libpython_first():
                if run_server is None:  # pragma: no cover - depends on the PyTriton release
                    self._triton.run()
                else:
                    run_server()
            if run_server is not None:
                # PyTriton's own wait for a Triton that died at startup lasts 120 s; this one ends with it
                self._wait_until_ready()
                self._triton.connect()
        except EdgeVitError:
            raise
        except Exception as exc:  # PyTriton and tritonclient raise their own types
            raise BackendError(
                f"Triton could not start or load model '{self.name}': {error_summary(exc)} "
                "(set EDGEVIT_SERVE_DEBUG=1 for PyTriton's log)"
            ) from exc
        self._procs = self._triton_tree()
        # the model's own ready endpoint, as a client sees it (patiently: a busy machine answers slowly)
        url = f"http://{self.http_url}/v2/models/{self.name}/ready"
        deadline = time.monotonic() + 60
        while http_status(url, timeout=5.0) != 200:
            if time.monotonic() > deadline or not self._triton.is_alive():
                raise BackendError(f"Triton started but model '{self.name}' is not ready: {self.log_tail()}")
            time.sleep(0.1)

    def _wait_until_ready(self) -> None:
        """Until Triton answers ready (it opens its ports once the model is loaded), or it exits."""
        url = f"http://{self.http_url}/v2/health/ready"
        t0 = time.monotonic()
        root = None
        while http_status(url, timeout=1.0) != 200:
            # the process is tritonserver once exec'd (shortly after the fork): look again until then
            root = root or self._triton_root()
            if root and not self._shm_prefix:
                self._shm_prefix = shm_region_prefix(root[0])
            gone = root is not None and not processes.running(*root)
            never_seen = root is None and self._workspace and time.monotonic() - t0 > 10
            if gone or never_seen:
                why = triton_log_error(self._log()) or self.log_tail()
                raise BackendError(f"Triton could not load model '{self.name}': {why}")
            if time.monotonic() - t0 > STARTUP_TIMEOUT_S:
                raise BackendError(f"Triton did not load model '{self.name}' in {STARTUP_TIMEOUT_S:.0f} s")
            time.sleep(0.1)

    def _triton_root(self) -> tuple[int, str] | None:
        """This server's ``tritonserver`` process (a child of this process running the
        binary PyTriton copied into this server's workspace)."""
        binary = str(Path(self._workspace) / "tritonserver" / "bin" / "tritonserver")
        for pid in processes.children(os.getpid()):
            if self._workspace and processes.executable(pid) == binary:
                return pid, processes.start_time(pid)
        return None

    @property
    def _server_binary(self) -> Path:
        return Path(self._workspace) / "tritonserver" / "bin" / "tritonserver"

    @property
    def _stub_binary(self) -> Path:
        return Path(self._workspace) / "tritonserver" / "backends" / "python" / "triton_python_backend_stub"

    def _triton_tree(self) -> list[tuple[int, str]]:
        root = self._triton_root()
        if root is None:
            return []
        self._shm_prefix = self._shm_prefix or shm_region_prefix(root[0])
        return processes.tree(root[0])

    def _infer_fn(self, core: InferenceCore) -> Any:
        def infer(requests: Sequence[Any]) -> list[dict[str, np.ndarray]]:
            out = []
            for answer in core([restore_empty_inputs(r) for r in requests]):
                if isinstance(answer, InputError):
                    if not self.per_request_errors:
                        raise answer  # this PyTriton can only fail the whole batch
                    answer = {ERROR: np.array([str(answer).encode("utf-8")], dtype=np.bytes_)}
                out.append(answer)
            return out

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

    def _write_repository_model(self, params: dict[str, str]) -> None:
        """Class names and preprocessing into the model config's ``parameters`` (read with
        ``get_model_config``) and :data:`REQUEST_HOOK` into the proxy model, in the
        repository PyTriton wrote at ``bind()``. PyTriton has no public hook for either; if a
        PyTriton release moves them, serve without them rather than fail."""
        log = logging.getLogger(__name__)
        try:
            for bound in self._triton._model_manager.models:
                backend_parameters = bound._get_triton_model_config().backend_parameters
                backend_parameters.update(params)
                self._workspace = str(backend_parameters.get("workspace-path", ""))
                store = Path(self._workspace) / "model-store"
                bound.generate_model(store)  # again, now with the parameters
                model_py = store / bound.model_name / str(bound.model_version) / "model.py"
                self.per_request_errors = install_request_hook(model_py)
        except (AttributeError, OSError) as exc:  # pragma: no cover - depends on the PyTriton release
            log.warning("this PyTriton's model repository cannot be amended (%s); class names are not served", exc)
        if not self.per_request_errors:
            log.warning("this PyTriton cannot fail one request of a batch: an invalid request fails its whole batch")

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
        """Stop serving and end every process Triton started; close the models.

        A ready model is unloaded first: requests in flight finish, new ones are refused,
        and Triton ends its Python-backend stub itself. Then Triton stops (it waits up to
        ``EXIT_TIMEOUT_S`` for clients to hang up). Whatever of Triton's process tree still
        runs ``STOP_GRACE_S`` later is killed; :attr:`left_running` lists what even that left."""
        self._stop.set()
        was_ready = self.state == "ready"
        self.state = "stopping"
        triton, self._triton = self._triton, None
        if triton is not None:
            procs = list(dict.fromkeys(self._procs + self._triton_tree()))
            if was_ready:
                self._unload(triton)
            try:
                triton.stop()
            except Exception as exc:  # pragma: no cover - Triton already gone
                logging.getLogger(__name__).debug("stopping Triton: %s", exc)
            # Triton is gone now and starts no more stubs. One it started after the tree was
            # recorded (Ctrl-C in a terminal reaches Triton mid-load too) is an orphan by now:
            # found by its binary, which lies in this server's workspace only.
            # The same for a tritonserver that was not yet this process's recognized child when
            # the tree was recorded (a load that failed while Triton was still starting up).
            binaries = (self._server_binary, self._stub_binary) if self._workspace else ()
            for found in (pid for b in binaries for pid in processes.running_binary(b)):
                procs += processes.tree(found)
            procs = list(dict.fromkeys(procs))
            left = processes.end(procs, STOP_GRACE_S)
            self.left_running = [processes.describe(pid) for pid, _ in left]
            if left:  # pragma: no cover - SIGKILL failed (another user's process?)
                logging.getLogger(__name__).warning("still running after stop: %s", "; ".join(self.left_running))
            elif self._shm_prefix:  # Triton removes its shared memory unless it was stopped mid-load or killed
                for region in Path("/dev/shm").glob(self._shm_prefix + "*"):
                    with contextlib.suppress(OSError):
                        region.unlink()
        for model in self.models:
            model.close()
        self.models = []
        self.state = "stopped"

    def _unload(self, triton: Any) -> None:
        """Unload the model through Triton's repository API (PyTriton guards it with a token):
        Triton finishes the requests in flight and refuses new ones, then ends the stub."""
        get_token = getattr(triton, "get_access_token", None)
        token = get_token() if get_token else None
        headers = {"Content-Type": "application/json"}
        if token:
            headers["triton-access-token"] = token
        url = f"http://{self.http_url}/v2/repository/models/{self.name}/unload"
        status = http_status(url, method="POST", headers=headers, timeout=EXIT_TIMEOUT_S + 5)
        if status != 200:
            logging.getLogger(__name__).debug("unloading %s answered %s", self.name, status)
        stubs = [p for p in self._procs if processes.executable(p[0]) == str(self._stub_binary)]
        processes.wait_gone(stubs, EXIT_TIMEOUT_S)

    def _log(self) -> str:
        server = getattr(self._triton, "_triton_server", None)
        return server.logs() if server is not None else ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        tail = [ln for ln in self._log().splitlines() if ln.strip()][-lines:]
        return " | ".join(tail) or "no Triton log"

    def __enter__(self) -> TritonModelServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
