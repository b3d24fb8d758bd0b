"""ONNX Runtime backend: the default that runs everywhere (CPU), plus ONNX Runtime's CUDA
and TensorRT execution providers when they are installed and asked for.

On the CPU a call can use the cores in three ways:

* ``ops``: ONNX Runtime's own intra-op threads split every operator of one run. The
  only way to put several cores on one image, but a small transformer's operators are
  short: on 2 cores, two threads run the 8x8 ``nano`` model *slower* than one.
* ``batch``: the batch is cut into one slice per thread and the slices run at the same
  time through one session with a single intra-op thread each (ONNX Runtime's ``run``
  is thread-safe and releases the GIL): the idea of OpenVINO's throughput streams, on
  ONNX Runtime. The weights are shared; each slice has its own activations.
* ``single``: the whole call on one thread, no hand-off at all.

Which is fastest depends on the model, the batch size and the machine (``nano`` at
batch 8 on 2 cores: ``single``; at batch 32: ``batch``; DeiT-Tiny: ``ops`` or ``batch``).
So ``parallel="auto"`` (the default) measures instead of guessing, the way TensorRT
picks tactics: the first call of each batch-size bucket (1, 2, 3-4, 5-8, 9-16, 17+) is
timed in every mode (a warm-up each, then up to three rounds of one run per mode, on at
most 32 images) and the fastest is kept for that bucket; ``runner.modes`` shows the choices.
The first call of a bucket therefore takes several runs longer. ``parallel="ops"`` or
``"batch"`` fixes the mode and skips the timing. A session with all the intra-op threads is
built the first time ``ops`` is timed or used, and kept.

INT8 models on the CPU also get rewrites of ONNX Runtime's optimized graph, checked to keep
the outputs (``rewrite``, see :mod:`edgevit.runtime.ort_rewrite`); ``runner.rewrites`` says
what was done, or why not.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from edgevit.errors import ArtifactError, BackendError, first_line
from edgevit.sysinfo import cpu_count, int8_dot_saturates

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
PARALLEL_MODES = ("auto", "batch", "ops")
INT8_MODES = ("auto", "integer", "exact")
TIMING_RUNS = 3  # timed rounds (one run per mode each) when a bucket is first seen, after a warm-up
TIMING_BUDGET_S = 0.25  # per mode: no further round once the timed runs took this long on average
TIMING_MAX_IMAGES = 32  # buckets are timed on at most this many images of the first call
TOP_BUCKET = 32  # calls of 17 images and more share one decision


def bucket(n: int) -> int:
    """The batch-size bucket of a call of ``n`` images: 1, 2, 4, 8, 16 or 32 (17 and up)."""
    return min(1 << max(n - 1, 0).bit_length(), TOP_BUCKET)


class OnnxRuntimeRunner:
    """Runs an ONNX model with ONNX Runtime.

    Args:
        path: the ``.onnx`` file.
        provider: ``cpu`` (default), ``cuda`` or ``tensorrt``. A provider that is not
            installed is an error, never a silent fall back to the CPU.
        threads: CPU threads (``None``: every core this process may use).
        parallel: how a CPU call uses the threads: ``auto``, ``batch`` or ``ops`` (see the
            module docstring). GPU providers always run a call as one batch.
        rewrite: rewrite ONNX Runtime's optimized INT8 graph for the CPU (in memory, checked
            to keep the outputs). Off for GPU providers.
        int8: how the CPU computes an INT8 Q/DQ model: ``integer`` (ONNX Runtime's integer
            kernels), ``exact`` (its Q/DQ graph in float: what the artifact and TensorRT
            compute) or ``auto`` (integer, except on x86 CPUs without VNNI, whose u8 x s8
            kernels saturate and drift from the Q/DQ graph: exact there, and ``name`` says so).
    """

    def __init__(
        self,
        path: str | Path,
        provider: str = "cpu",
        threads: int | None = None,
        parallel: str = "auto",
        rewrite: bool = True,
        int8: str = "auto",
    ):
        import onnxruntime as ort

        if provider not in PROVIDERS:
            raise BackendError(f"unknown ONNX Runtime provider {provider!r}; choose one of {sorted(PROVIDERS)}")
        if parallel not in PARALLEL_MODES:
            raise BackendError(f"unknown parallel mode {parallel!r}; choose one of {list(PARALLEL_MODES)}")
        if threads is not None and threads < 1:
            raise BackendError(f"threads must be at least 1, got {threads}")
        if int8 not in INT8_MODES:
            raise BackendError(f"unknown int8 mode {int8!r}; choose one of {list(INT8_MODES)}")
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
        # Batch slicing and timing only matter on the CPU, with more than one thread.
        self.parallel = parallel if ep == "CPUExecutionProvider" and self.threads > 1 else "ops"
        self._model: str | bytes = str(self.path)
        on_cpu = ep == "CPUExecutionProvider"
        # Q/DQ computed in float instead of ONNX Runtime's saturating u8 x s8 kernels
        self.exact_int8 = on_cpu and (int8 == "exact" or (int8 == "auto" and int8_dot_saturates()))
        self.rewrites = "off"
        if self.exact_int8:
            self.rewrites = "off (INT8 computed exactly, dequantized: integer kernels would saturate on this CPU)"
        elif rewrite and on_cpu:
            self._rewrite()
        self._lock = threading.Lock()  # lazily built sessions and pool
        self._timing_lock = threading.Lock()  # one bucket timed at a time
        self._pool: ThreadPoolExecutor | None = None
        self._ops_session: Any = None
        self._one_session: Any = None  # one intra-op thread: "single" runs and the slices of "batch"
        if self.parallel == "ops":
            self._ops_session = self._new_session(self.threads)
        else:
            self._one_session = self._new_session(1)
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ArtifactError(f"{path} has {len(inputs)} inputs; an edgevit classifier has exactly one")
        self.input_name = inputs[0].name
        if self.parallel != "ops" and not isinstance(inputs[0].shape[0], str):
            # a graph exported with a fixed batch size cannot take slices of a batch
            self.parallel = "ops"
            self._ops_session, self._one_session = self._new_session(self.threads), None
        # bucket -> "ops", "batch" or "single": fixed by `parallel`, or timed on first use
        self.modes: dict[int, str] = {}
        self.output_names = [o.name for o in self.session.get_outputs()]
        if self.exact_int8 and self.session.get_modelmeta().custom_metadata_map.get("edgevit.precision") == '"fp32"':
            self.exact_int8, self.rewrites = False, "no CPU rewrites apply"  # nothing to quantize: say nothing
        self.name = f"onnxruntime:{self.session.get_providers()[0]}" + (":int8-exact" if self.exact_int8 else "")
        self.max_batch: int | None = None

    @property
    def session(self) -> Any:
        """The ONNX Runtime session built at load (metadata, inputs and outputs)."""
        return self._one_session if self._one_session is not None else self._ops_session

    def describe_modes(self) -> str:
        """How calls of each batch size run, e.g. ``parallel=auto (1: single, 8: batch)``."""

        def sizes(b: int) -> str:
            return str(b) if b <= 2 else f"{b // 2 + 1}+" if b == TOP_BUCKET else f"{b // 2 + 1}-{b}"

        chosen = ", ".join(f"{sizes(b)}: {m}" for b, m in sorted(self.modes.items()))
        return f"parallel={self.parallel}" + (f" ({chosen})" if chosen else "")

    def _rewrite(self) -> None:
        from edgevit.runtime.ort_rewrite import rewrite_for_cpu

        try:
            model, done = rewrite_for_cpu(self.path)
        except Exception as exc:  # the graph as it is computes the same: say why, run it
            self.rewrites = f"CPU rewrites not applied ({first_line(exc)})"
            return
        self.rewrites = str(done)
        if model is not None:
            self._model = model

    def _new_session(self, intra_op_threads: int) -> Any:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = intra_op_threads
        # idle intra-op threads block instead of spinning: the runner keeps sessions of both
        # kinds (and the camera loop its capture threads), and a spinning pool of one steals
        # the cores of the others (about neutral for the session itself, measured)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3  # errors only: ORT's warnings are not the user's business
        if self.exact_int8:  # keep Q -> DQ -> float op: no fusion into integer kernels
            opts.add_session_config_entry("session.disable_quant_qdq", "1")
        try:
            return ort.InferenceSession(self._model, sess_options=opts, providers=self._providers)
        except Exception as exc:
            raise ArtifactError(f"{self.path} is not a readable ONNX model ({first_line(exc)}); re-export it") from exc

    def _ops(self) -> Any:
        if self._ops_session is None:
            with self._lock:
                if self._ops_session is None:
                    self._ops_session = self._new_session(self.threads)
        return self._ops_session

    def infer(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        n = len(feed[self.input_name])
        if self.parallel == "ops":
            return self._ops_session.run(self.output_names, feed)
        if self.parallel == "batch":
            return self._run("batch", feed, n)
        mode = self.modes.get(bucket(n))
        if mode is None:
            mode = self._decide(feed, n)
        return self._run(mode, feed, n)

    def _run(self, mode: str, feed: dict[str, np.ndarray], n: int) -> list[np.ndarray]:
        if mode == "ops":
            return self._ops().run(self.output_names, feed)
        parts = min(self.threads, n) if mode == "batch" else 1
        if parts <= 1:
            return self._one_session.run(self.output_names, feed)
        # (N, C, H, W) -> `parts` contiguous slices along N, run side by side, joined in order
        cuts = [i * n // parts for i in range(parts + 1)]
        feeds = [{k: v[a:b] for k, v in feed.items()} for a, b in zip(cuts, cuts[1:])]
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="edgevit-ort")
        sess, names = self._one_session, self.output_names
        # the other slices go to the pool, the first runs on this thread: one hand-off fewer
        pending = [self._pool.submit(sess.run, names, f) for f in feeds[1:]]
        outs = [sess.run(names, feeds[0])] + [f.result() for f in pending]
        return [np.concatenate([o[i] for o in outs], axis=0) for i in range(len(names))]

    def _decide(self, feed: dict[str, np.ndarray], n: int) -> str:
        """Time this call's bucket in every mode (on at most TIMING_MAX_IMAGES images of
        ``feed``) and keep the fastest; one thread decides, concurrent callers wait."""
        key = bucket(n)
        with self._timing_lock:
            if key in self.modes:
                return self.modes[key]
            m = min(n, TIMING_MAX_IMAGES)
            sample = {k: v[:m] for k, v in feed.items()} if m < n else feed
            modes = ("single", "ops", "batch") if m > 1 else ("single", "ops")
            for mode in modes:
                self._run(mode, sample, m)  # warm-up: first runs of a shape allocate
            # timed round-robin, so a slow moment of the machine hits every mode alike
            best = dict.fromkeys(modes, float("inf"))
            spent = 0.0
            for _ in range(TIMING_RUNS):
                for mode in modes:
                    t0 = time.perf_counter()
                    self._run(mode, sample, m)
                    dt = time.perf_counter() - t0
                    best[mode], spent = min(best[mode], dt), spent + dt
                if spent >= TIMING_BUDGET_S * len(modes):
                    break
            self.modes[key] = min(best, key=best.__getitem__)
            return self.modes[key]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._ops_session = self._one_session = None

    def __enter__(self) -> OnnxRuntimeRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
