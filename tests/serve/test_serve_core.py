"""The request handling behind `edgevit serve` (no Triton needed): several requests merged
into one backend call and split back, results equal to predict(), a bad request refused
alone; the code edgevit adds to PyTriton's stub-side handler; the end of a process tree; and
that the CLI stays importable without the optional serving packages."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from serve_helpers import ROOT, missing

from edgevit.errors import BackendError, InputError
from edgevit.serve.core import InferenceCore


@pytest.fixture(scope="module")
def model(nano_artifacts):
    from edgevit import runtime

    with runtime.load(nano_artifacts.int8_onnx, threads=1, batch_size=4) as m:
        yield m


def test_requests_are_merged_and_split_back(model, digits_test_images) -> None:
    images = digits_test_images[0][:9]
    core = InferenceCore(model, top_k=3)
    x = model.preprocess(images[6:])
    out = core([{"images": images[:2]}, {"images": images[2:6]}, {"tensor": x}])
    assert [len(o["top_k"]) for o in out] == [2, 4, 3]
    want = model.predict(images, top_k=3)
    np.testing.assert_array_equal(np.concatenate([o["top_k"] for o in out]), want.indices)
    probs = np.concatenate([o["probs"] for o in out])
    np.testing.assert_allclose(np.take_along_axis(probs, want.indices, axis=1), want.probs, atol=1e-6)
    assert probs.shape == (9, 10) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert core.stats.requests == 3 and core.stats.images == 9 and core.stats.refused == 0
    assert core.stats.backend_calls == 3  # 9 images in chunks of the model's batch size 4


def test_top_k_is_capped_at_the_number_of_classes(model, digits_test_images) -> None:
    out = InferenceCore(model, top_k=50)([{"images": digits_test_images[0][:1]}])
    assert out[0]["top_k"].shape == (1, 10) and out[0]["top_k"].dtype == np.int64


BAD_REQUESTS = {
    "neither input": ({}, "neither"),
    "both inputs": (
        {"images": np.zeros((1, 8, 8, 1), np.uint8), "tensor": np.zeros((1, 1, 8, 8), np.float32)},
        "both",
    ),
    "empty batch": ({"images": np.zeros((0, 8, 8, 1), np.uint8)}, "empty"),
    "0 x 0 image": ({"images": np.zeros((1, 0, 0, 1), np.uint8)}, "no pixels"),
    "float images": ({"images": np.zeros((1, 8, 8, 1), np.float32)}, "uint8"),
    "wrong channels": ({"images": np.zeros((1, 8, 8, 3), np.uint8)}, "channels"),
    "int tensor": ({"tensor": np.zeros((1, 1, 8, 8), np.int32)}, "float32"),
    "wrong shape": ({"tensor": np.zeros((1, 1, 9, 8), np.float32)}, "shape"),
    "NaN": ({"tensor": np.full((1, 1, 8, 8), np.nan, np.float32)}, "NaN"),
    "Inf in one image": (
        {"tensor": np.concatenate([np.zeros((1, 1, 8, 8), np.float32), np.full((1, 1, 8, 8), np.inf, np.float32)])},
        "NaN or Inf",
    ),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_a_bad_request_is_refused_alone(model, digits_test_images, case: str) -> None:
    """Issue #15 F13: a bad request between valid ones gets its own one-line InputError; the
    valid ones of the same batch get predict()'s results."""
    bad, message = BAD_REQUESTS[case]
    images = digits_test_images[0][:5]
    core = InferenceCore(model, top_k=3)
    answers = core([{"images": images[:2]}, bad, {"tensor": model.preprocess(images[2:])}])
    assert isinstance(answers[1], InputError) and re.search(message, str(answers[1]))
    assert "\n" not in str(answers[1]) and "request 1" not in str(answers[1])
    want = model.predict(images, top_k=3).indices
    np.testing.assert_array_equal(answers[0]["top_k"], want[:2])
    np.testing.assert_array_equal(answers[2]["top_k"], want[2:])
    assert core.stats.requests == 2 and core.stats.refused == 1 and core.stats.images == 5


def test_a_batch_of_bad_requests_runs_nothing(model) -> None:
    core = InferenceCore(model)
    answers = core([BAD_REQUESTS["NaN"][0], BAD_REQUESTS["neither input"][0]])
    assert all(isinstance(a, InputError) for a in answers)
    assert core.stats.backend_calls == 0 and core.stats.refused == 2


class FakePbUtils:
    """What REQUEST_HOOK uses of Triton's ``triton_python_backend_utils``."""

    class TritonError:
        INTERNAL, INVALID_ARG = 13, 3

        def __init__(self, message: str, code: int = 13):
            self.message, self.code = message, code

    class InferenceResponse:
        def __init__(self, output_tensors=None, error=None):
            self.output_tensors, self.error = output_tensors, error


def run_request_hook() -> dict:
    """REQUEST_HOOK executed on stand-ins of the PyTriton functions it wraps."""
    from edgevit.serve.server import REQUEST_HOOK

    class Response:
        def __init__(self, data):
            self.data = data

    class Request:
        def __init__(self, data):
            self.data = data

    class TritonRequestsServer:
        def _wrap_request(self, triton_request, inputs, span=None):
            return Request(dict(triton_request))

    def _wrap_response(response, requested_outputs_names, model_outputs_dict):
        return ("results", sorted(response.data))

    namespace = {
        "pb_utils": FakePbUtils,
        "_wrap_response": _wrap_response,
        "TritonRequestsServer": TritonRequestsServer,
        "Response": Response,
    }
    exec(compile(REQUEST_HOOK, "REQUEST_HOOK", "exec"), namespace)
    return namespace


def test_request_hook_fails_one_request_with_its_message() -> None:
    """The stub-side half of F13/F14: a response marked with an error becomes that request's
    INVALID_ARG error (HTTP 400, gRPC INVALID_ARGUMENT); other responses are PyTriton's."""
    from edgevit.serve.server import ERROR

    ns = run_request_hook()
    wrap, Response = ns["_wrap_response"], ns["Response"]
    message = "input contains 64 NaN or Inf values; clean or drop those images before inference"
    err = wrap(Response({ERROR: np.array([message.encode()], dtype=np.bytes_)}), ["probs"], {})
    assert err.error.message == message and err.error.code == FakePbUtils.TritonError.INVALID_ARG
    assert err.output_tensors == []
    assert wrap(Response({"probs": np.zeros((1, 10))}), ["probs"], {}) == ("results", ["probs"])


def test_request_hook_sends_inputs_without_elements_as_their_shape() -> None:
    """PyTriton's tensor store fails a whole batch on a 0 x 0 image; the hook sends its shape
    instead, and the server gives it back to the core as an empty array to refuse."""
    from edgevit.serve.server import EMPTY, restore_empty_inputs

    ns = run_request_hook()
    server = ns["TritonRequestsServer"]()
    zero = np.zeros((1, 0, 0, 1), np.uint8)
    request = server._wrap_request({"images": zero, "tensor": np.ones((1, 1, 8, 8), np.float32)}, ["images", "tensor"])
    assert sorted(request.data) == [EMPTY + "images", "tensor"]
    np.testing.assert_array_equal(request.data[EMPTY + "images"], [1, 0, 0, 1])
    back = restore_empty_inputs(request.data)
    assert back["images"].shape == (1, 0, 0, 1) and back["images"].dtype == np.uint8 and "tensor" in back


@pytest.mark.skipif(bool(missing("pytriton.triton")), reason=missing("pytriton.triton") or "ok")
def test_request_hook_goes_into_pytritons_own_handler(tmp_path) -> None:
    """The hook is appended to (a copy of) this PyTriton's proxy model, which still compiles;
    a proxy without the functions it wraps is left alone."""
    from pathlib import Path

    import pytriton

    from edgevit.serve.server import REQUEST_HOOK, install_request_hook

    proxy = tmp_path / "model.py"
    proxy.write_text((Path(pytriton.__file__).parent / "proxy" / "model.py").read_text())
    assert install_request_hook(proxy) and install_request_hook(proxy)  # idempotent
    text = proxy.read_text()
    assert text.count(REQUEST_HOOK) == 1
    compile(text, str(proxy), "exec")
    other = tmp_path / "other.py"
    other.write_text("def execute(requests):\n    return []\n")
    assert not install_request_hook(other) and other.read_text() == "def execute(requests):\n    return []\n"


def test_cli_imports_without_the_serving_packages() -> None:
    code = (
        "import sys\n"
        "for m in ('pytriton', 'tritonclient'):\n"
        "    sys.modules[m] = None  # importing them now fails\n"
        "from edgevit.cli import build_parser\n"
        "p = build_parser()\n"
        "a = p.parse_args(['serve', 'm.onnx', '--max-batch', '8', '--preferred-batch-size', '2', '4'])\n"
        "assert a.max_batch == 8 and a.preferred_batch_size == [2, 4]\n"
        "assert not [m for m in sys.modules if m.startswith(('torch', 'pytriton', 'tritonclient')) and sys.modules[m]]\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_missing_packages_say_how_to_install(monkeypatch: pytest.MonkeyPatch, nano_artifacts) -> None:
    from edgevit.serve.pbtxt import parse_config
    from edgevit.serve.server import TritonModelServer

    monkeypatch.setitem(sys.modules, "pytriton.triton", None)
    monkeypatch.setitem(sys.modules, "tritonclient.grpc.model_config_pb2", None)
    with pytest.raises(BackendError, match=r"pip install 'edgevit\[serve\]'"):
        TritonModelServer(nano_artifacts.int8_onnx).start()
    with pytest.raises(BackendError, match=r"pip install 'edgevit\[serve\]'"):
        parse_config('name: "x"')


def test_serve_refuses_bad_settings_before_starting(nano_artifacts) -> None:
    from edgevit.serve.server import ServeConfig, TritonModelServer

    for cfg in (
        ServeConfig(max_batch=0),
        ServeConfig(max_batch=8, preferred_batch_sizes=[16]),
        ServeConfig(instances=0),
        ServeConfig(http_port=9000, grpc_port=9000),
        ServeConfig(model_name="bad name!"),
        ServeConfig(model_name=".."),
        ServeConfig(model_name="."),
    ):
        with pytest.raises(InputError):
            TritonModelServer(nano_artifacts.int8_onnx, cfg)


def test_own_libpython_goes_first_while_triton_starts(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """PyTriton's Python-backend stub must load this interpreter's libpython (field notes §5)."""
    import os
    import sysconfig

    from edgevit.serve.server import own_libpython_first

    libdir = sysconfig.get_config_var("LIBDIR")
    monkeypatch.setenv("LD_LIBRARY_PATH", f"/opt/other{os.pathsep}{libdir}")
    with own_libpython_first():
        assert os.environ["LD_LIBRARY_PATH"].split(os.pathsep) == [libdir, "/opt/other"]
    assert os.environ["LD_LIBRARY_PATH"] == f"/opt/other{os.pathsep}{libdir}"
    monkeypatch.delenv("LD_LIBRARY_PATH")
    with own_libpython_first():
        assert os.environ["LD_LIBRARY_PATH"] == libdir
    assert "LD_LIBRARY_PATH" not in os.environ


def test_triton_errors_are_summarized_in_one_line() -> None:
    from edgevit.serve.server import error_summary

    text = (
        "[400] load failed for model 'm': TritonModelException: Model initialize error: Traceback\\n"
        '  File "x.py", line 1, in f\\n'
        "AttributeError: '_thread.RLock' object has no attribute '_recursion_count'\\n\\nAt:\\n  model.py(454)"
    )
    assert (
        error_summary(RuntimeError(text))
        == "AttributeError: '_thread.RLock' object has no attribute '_recursion_count'"
    )
    assert error_summary(RuntimeError("plain failure")) == "plain failure"


@pytest.mark.skipif(bool(missing("pytriton.model_config")), reason=missing("pytriton.model_config") or "ok")
def test_max_batch_beyond_an_engine_profile_is_refused(monkeypatch: pytest.MonkeyPatch, model) -> None:
    """A runner with a profile (TensorRT) caps --max-batch; a larger explicit value is refused
    before Triton starts."""
    from edgevit import runtime
    from edgevit.runtime.base import Model
    from edgevit.serve.server import ServeConfig, TritonModelServer

    class ProfileRunner:
        name, input_name, output_names, max_batch = "fake-trt", "images", ["logits"], 8

        def infer(self, feed: dict) -> list:
            return model.runner.infer(feed)

        def close(self) -> None:
            pass

    monkeypatch.setattr(runtime, "load", lambda *a, **k: Model(ProfileRunner(), model.info, batch_size=k["batch_size"]))
    server = TritonModelServer("fake.engine", ServeConfig(max_batch=16))
    with pytest.raises(InputError, match="optimization profile"):
        server.start()
    assert server.models == [] and server._triton is None


@pytest.mark.skipif(bool(missing("pytriton.triton")), reason=missing("pytriton.triton") or "ok")
def test_a_port_in_use_is_refused_before_anything_starts(nano_artifacts) -> None:
    import socket

    from serve_helpers import free_ports

    from edgevit.serve.server import ServeConfig, TritonModelServer

    grpc, metrics = free_ports(2)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        cfg = ServeConfig(http_port=busy.getsockname()[1], grpc_port=grpc, metrics_port=metrics)
        server = TritonModelServer(nano_artifacts.int8_onnx, cfg)
        with pytest.raises(InputError, match=r"cannot listen on 127\.0\.0\.1"):
            server.start()
    assert server.models == []


def test_triton_log_error_names_the_models_failure() -> None:
    from edgevit.serve.server import triton_log_error

    log = (
        'E1202 14:25:56.452878 14929 server.cc:241] "CudaDriverHelper has not been initialized."\n'
        'I1202 14:25:57.474696 14929 model_lifecycle.cc:472] "loading: nano:1"\n'
        "E1202 14:25:59.628251 14929 model_lifecycle.cc:654] \"failed to load 'nano' version 1: Internal: "
        "AttributeError: '_thread.RLock' object has no attribute '_recursion_count'\"\n"
        'E1202 14:25:59.7 14929 main.cc:99] "error: creating server: Internal - failed to load all models"\n'
    )
    why = triton_log_error(log)
    assert "AttributeError: '_thread.RLock' object has no attribute '_recursion_count'" in why
    assert "Cuda" not in why and "creating server" not in why
    assert triton_log_error("I1202 all fine") == ""


def test_processes_end_kills_what_ignores_sigterm() -> None:
    """Issue #15 F15: Triton's Python-backend stub ignores SIGTERM and outlives Triton;
    processes.end() gives such a process its grace time, then kills it."""
    from edgevit.serve import processes

    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"1"  # the handler is in place
        me = processes.tree(proc.pid)
        assert me == [(proc.pid, processes.start_time(proc.pid))]
        os_kill_term(proc.pid)
        assert processes.alive(me) == me  # SIGTERM ignored
        assert processes.end(me, grace_s=0.2) == []
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()


def test_processes_end_never_signals_a_reused_pid() -> None:
    from edgevit.serve import processes

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        wrong = [(proc.pid, "0")]  # same pid, another start time: not ours
        assert processes.alive(wrong) == [] and processes.end(wrong, grace_s=0.0) == []
        time.sleep(0.2)
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


def os_kill_term(pid: int) -> None:
    import os

    os.kill(pid, signal.SIGTERM)
    time.sleep(0.2)


def test_serve_and_export_flags_are_the_shared_ones() -> None:
    """Issue #12: serve takes predict's runtime options, --top-k and -q; export-triton names its
    folder with --out (-o/--output names a file everywhere)."""
    from edgevit.cli import build_parser

    p = build_parser()
    a = p.parse_args(
        ["serve", "m.onnx", "--backend", "openvino", "--openvino-precision", "bf16", "-q", "--threads", "1"]
    )
    assert (a.backend, a.provider, a.openvino_precision, a.threads, a.quiet, a.top_k) == (
        "openvino",
        "cpu",
        "bf16",
        1,
        True,
        5,
    )
    assert p.parse_args(["export-triton", "m.onnx", "--out", "repo"]).out.name == "repo"
    with pytest.raises(SystemExit):
        p.parse_args(["export-triton", "m.onnx", "-o", "repo"])
