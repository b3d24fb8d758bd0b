"""ONNX Runtime backend: the default that runs everywhere (CPU), plus ONNX Runtime's CUDA
and TensorRT execution providers when they are installed and asked for.

On the CPU a batch can use the cores in two ways (``parallel``):

* ``ops``: ONNX Runtime's own intra-op threads split every operator of one run. The
  only way to put two cores on one image, but a small transformer's operators are too
  short to split well: on 2 cores, two threads run DeiT-Tiny's INT8 graph only ~1.1x
  faster than one at batch 1 (~1.75x at batch 8), and the 8x8 ``nano`` model ~1.8x
  *slower* than one thread at batch 1.
* ``batch``: the batch is cut into one slice per thread and the slices run at the same
  time through one session with a single intra-op thread each (ONNX Runtime's ``run``
  is thread-safe and releases the GIL). The idea of OpenVINO's throughput streams,
  done on ONNX Runtime: ~1.15x the images/s of ``ops`` for DeiT-Tiny INT8 at batch 8
  on 2 cores. The weights are shared; each slice has its own activations.

``auto`` (the default) uses ``batch`` when a call holds at least one image per thread.
For smaller calls it times, once, the first such call both ways (``ops`` with all the
threads, or one thread) and keeps the faster (``runner.small_batches`` says which).

INT8 models on the CPU also get three exact rewrites of ONNX Runtime's optimized graph
(``tune``, see :mod:`edgevit.runtime.ort_tune`); ``runner.tuning`` says what was done.
"""

from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from edgevit.artifacts import _first_line
from edgevit.errors import ArtifactError, BackendError
from edgevit.sysinfo import cpu_count

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
PARALLEL_MODES = ("auto", "batch", "ops")


class OnnxRuntimeRunner:
    """Runs an ONNX model with ONNX Runtime.

    Args:
        path: the ``.onnx`` file.
        provider: ``cpu`` (default), ``cuda`` or ``tensorrt``. A provider that is not
            installed is an error, never a silent fall back to the CPU.
        threads: CPU threads (``None``: every core this process may use).
        parallel: how a CPU call uses the threads: ``auto``, ``batch`` or ``ops`` (see the
            module docstring). GPU providers always run a call as one batch.
        tune: rewrite ONNX Runtime's optimized INT8 graph for the CPU (in memory; the
            outputs stay the same). Off for GPU providers.
    """

    def __init__(
        self,
        path: str | Path,
        provider: str = "cpu",
        threads: int | None = None,
        parallel: str = "auto",
        tune: bool = True,
    ):
        import onnxruntime as ort

        if provider not in PROVIDERS:
            raise BackendError(f"unknown ONNX Runtime provider {provider!r}; choose one of {sorted(PROVIDERS)}")
        if parallel not in PARALLEL_MODES:
            raise BackendError(f"unknown parallel mode {parallel!r}; choose one of {list(PARALLEL_MODES)}")
        if threads is not None and threads < 1:
            raise BackendError(f"threads must be at least 1, got {threads}")
        ep = PROVIDERS[provider]
        available = ort.get_available_providers()
        if ep not in available:
            raise BackendError(
                f"ONNX Runtime provider {ep} is not available here (have {available}); "
                f"install onnxruntime-gpu for cuda/tensorrt, or use provider='cpu'"
            )
        self.path = Path(path)
        self.threads = int(threads) if threads else cpu_count()
        self._providers = [ep] if ep == "CPUExecutionProvider" else [ep, "CPUExecutionProvider"]
        # Batch slicing only pays on the CPU, with more than one thread.
        self.parallel = parallel if ep == "CPUExecutionProvider" and self.threads > 1 else "ops"
        self._model: str | bytes = str(self.path)
        self.tuning = "off"
        if tune and ep == "CPUExecutionProvider":
            self._tune()
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._ops_session: Any = None
        self.small_batches = "ops" if self.parallel == "ops" else "batch" if self.parallel == "batch" else "undecided"
        self._batch_session: Any = None
        if self.parallel == "ops":
            self._ops_session = self._new_session(self.threads)
        else:
            self._batch_session = self._new_session(1)
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ArtifactError(f"{path} has {len(inputs)} inputs; an edgevit classifier has exactly one")
        self.input_name = inputs[0].name
        if self.parallel != "ops" and not isinstance(inputs[0].shape[0], str):
            # a graph exported with a fixed batch size cannot take slices of a batch
            self.parallel = self.small_batches = "ops"
            self._ops_session, self._batch_session = self._new_session(self.threads), None
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.name = f"onnxruntime:{self.session.get_providers()[0]}"
        self.max_batch: int | None = None

    @property
    def session(self) -> Any:
        """The ONNX Runtime session built at load (metadata, inputs and outputs)."""
        return self._batch_session if self._batch_session is not None else self._ops_session

    def _tune(self) -> None:
        from edgevit.runtime.ort_tune import tune_for_cpu

        try:
            model, tuning = tune_for_cpu(self.path)
        except Exception as exc:  # the untuned graph computes the same: say why, run it
            self.tuning = f"not applied ({_first_line(exc)})"
            return
        self.tuning = str(tuning)
        if model is not None:
            self._model = model

    def _new_session(self, intra_op_threads: int) -> Any:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = intra_op_threads
        opts.log_severity_level = 3  # errors only: ORT's warnings are not the user's business
        try:
            return ort.InferenceSession(self._model, sess_options=opts, providers=self._providers)
        except Exception as exc:
            raise ArtifactError(f"{self.path} is not a readable ONNX model ({_first_line(exc)}); re-export it") from exc

    def _ops(self) -> Any:
        if self._ops_session is None:
            self._ops_session = self._new_session(self.threads)
        return self._ops_session

    def _pick_small_batches(self, feed: dict[str, np.ndarray]) -> None:
        """Time ``feed`` on all threads (``ops``) and on one thread; keep the faster."""
        best: dict[str, float] = {}
        for mode, sess in (("ops", self._ops()), ("batch", self._batch_session)):
            sess.run(self.output_names, feed)  # warm-up: first runs allocate
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                sess.run(self.output_names, feed)
                times.append(time.perf_counter() - t0)
            best[mode] = min(times)
        self.small_batches = "ops" if best["ops"] < best["batch"] else "batch"
        if self.small_batches == "batch":
            self._ops_session = None  # not needed: free its memory

    def infer(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        n = len(feed[self.input_name])
        if self.parallel == "ops":
            return self._ops_session.run(self.output_names, feed)
        if self.parallel == "auto" and n < self.threads:
            if self.small_batches == "undecided":
                with self._lock:
                    if self.small_batches == "undecided":
                        self._pick_small_batches(feed)
            if self.small_batches == "ops":
                return self._ops_session.run(self.output_names, feed)
        parts = min(self.threads, n)
        if parts <= 1:
            return self._batch_session.run(self.output_names, feed)
        # (N, C, H, W) -> `parts` contiguous slices along N, run side by side, joined in order
        bounds = np.linspace(0, n, parts + 1).astype(int)
        feeds = [{k: v[a:b] for k, v in feed.items()} for a, b in itertools.pairwise(bounds)]
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="edgevit-ort")
        sess, names = self._batch_session, self.output_names
        outs = list(self._pool.map(lambda f: sess.run(names, f), feeds))
        return [np.concatenate([o[i] for o in outs], axis=0) for i in range(len(names))]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._ops_session = self._batch_session = None

    def __enter__(self) -> OnnxRuntimeRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
