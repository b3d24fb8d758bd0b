"""`edgevit serve` end to end: a real Triton server (PyTriton) on free loopback ports with
the trained nano model, queried with tritonclient over HTTP and gRPC.

One server per module (started once, about 5 s) serves the tests that query it; no test
stops it, so they pass in any order. The tests that stop a server start their own: SIGTERM,
and the slow ones (readiness, Ctrl-C while loading, 16 clients with a quarter of bad
requests)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from serve_helpers import LOOPBACK, ROOT, ServeProcess, alive, descendants, describe, free_ports, missing, start_serve
from serve_helpers import start_time as proc_start_time

REASON = missing("pytriton.triton", "tritonclient.http", "tritonclient.grpc")
pytestmark = pytest.mark.skipif(bool(REASON), reason=REASON or "ok")

MAX_BATCH = 16


@pytest.fixture(scope="module")
def nano_model(nano_artifacts):
    from edgevit import runtime

    with runtime.load(nano_artifacts.int8_onnx, threads=1) as model:
        yield model


@pytest.fixture(scope="module")
def server(nano_artifacts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    extra = ["--max-batch", str(MAX_BATCH), "--max-queue-delay-us", "20000", "--preferred-batch-size", "4", "8"]
    s = start_serve(nano_artifacts.int8_onnx, log, extra)
    try:
        yield s
    finally:
        s.stop()


def http_client(server: ServeProcess):
    import tritonclient.http as th

    return th.InferenceServerClient(server.http_url, network_timeout=30.0, connection_timeout=10.0)


def http_infer(client, name: str, inputs: dict[str, np.ndarray]):
    import tritonclient.http as th
    from tritonclient.utils import np_to_triton_dtype

    tensors = []
    for key, arr in inputs.items():
        t = th.InferInput(key, list(arr.shape), np_to_triton_dtype(arr.dtype))
        t.set_data_from_numpy(arr)
        tensors.append(t)
    return client.infer(name, tensors)


def expected(model, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from edgevit.runtime import softmax

    probs = softmax(model.logits(images))
    return probs, model.predict(images, top_k=5).indices


def test_http_uint8_images_equal_predict(server: ServeProcess, nano_model, digits_test_images) -> None:
    images = digits_test_images[0][:12]
    result = http_infer(http_client(server), server.name, {"images": images})
    probs, top = expected(nano_model, images)
    np.testing.assert_allclose(result.as_numpy("probs"), probs, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(result.as_numpy("top_k"), top)
    np.testing.assert_array_equal(result.as_numpy("top_k")[:, 0], nano_model.predict(images).top1)


def test_grpc_float_tensor_equals_predict(server: ServeProcess, nano_model, digits_test_images) -> None:
    import tritonclient.grpc as tg

    images = digits_test_images[0][12:20]
    x = nano_model.preprocess(images)
    client = tg.InferenceServerClient(server.grpc_url)
    inp = tg.InferInput("tensor", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer(server.name, [inp], client_timeout=30.0)
    probs, top = expected(nano_model, images)
    np.testing.assert_allclose(result.as_numpy("probs"), probs, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(result.as_numpy("top_k"), top)


def test_images_of_any_size_are_preprocessed_like_predict(server: ServeProcess, nano_model) -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(3, 24, 17, 1), dtype=np.uint8)
    result = http_infer(http_client(server), server.name, {"images": images})
    np.testing.assert_array_equal(result.as_numpy("top_k"), nano_model.predict(images, top_k=5).indices)


def test_health_metadata_and_metrics_answer(server: ServeProcess, nano_model) -> None:
    import json

    client = http_client(server)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(server.name)
    meta = client.get_model_metadata(server.name)
    assert {i["name"]: i["datatype"] for i in meta["inputs"]} == {"images": "UINT8", "tensor": "FP32"}
    assert {o["name"]: o["shape"] for o in meta["outputs"]} == {"probs": [-1, 10], "top_k": [-1, 5]}
    config = client.get_model_config(server.name)
    assert config["max_batch_size"] == MAX_BATCH
    assert config["dynamic_batching"]["preferred_batch_size"] == [4, 8]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 20000
    params = {k: v["string_value"] for k, v in config["parameters"].items()}
    assert json.loads(params["edgevit.class_names"]) == nano_model.class_names
    assert json.loads(params["edgevit.preprocess"])["size"] == 8
    text = server.metrics()
    assert "nv_inference_count" in text and "nv_inference_exec_count" in text


def counter(text: str, metric: str, model: str) -> float:
    pattern = rf'^{metric}\{{[^}}]*model="{re.escape(model)}"[^}}]*\}} ([0-9.e+]+)$'
    values = [float(m.group(1)) for m in re.finditer(pattern, text, re.MULTILINE)]
    assert values, f"{metric} for {model} not in metrics"
    return sum(values)


def test_concurrent_load_loses_nothing_and_batches(server: ServeProcess, nano_model, digits_test_images) -> None:
    """8 clients x 25 requests (1-3 images each), bounded by a 60 s deadline: every request is
    answered, in order per client, with predict()'s result; Triton's metrics show batches > 1."""
    clients, per_client, deadline = 8, 25, time.monotonic() + 60
    images = digits_test_images[0]
    _, top_all = expected(nano_model, images)
    before = server.metrics()
    results: dict[int, list[tuple[int, bool]]] = {c: [] for c in range(clients)}
    errors: list[str] = []

    def run(c: int) -> None:
        client = http_client(server)
        try:
            for i in range(per_client):
                if time.monotonic() > deadline:
                    errors.append(f"client {c}: deadline passed at request {i}")
                    return
                start = (c * per_client + i) * 3 % (len(images) - 3)
                n = 1 + (c + i) % 3
                r = http_infer(client, server.name, {"images": images[start : start + n]})
                results[c].append((i, bool(np.array_equal(r.as_numpy("top_k"), top_all[start : start + n]))))
        except Exception as exc:
            errors.append(f"client {c}: {exc}")
        finally:
            client.close()

    threads = [threading.Thread(target=run, args=(c,), daemon=True) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(1.0, deadline - time.monotonic() + 5))
    assert not any(t.is_alive() for t in threads), "clients still running after the deadline"
    assert not errors, errors
    for c in range(clients):
        assert [i for i, _ in results[c]] == list(range(per_client)), f"client {c} lost or reordered replies"
        assert all(ok for _, ok in results[c]), f"client {c} got wrong results"
    after = server.metrics()
    requests = counter(after, "nv_inference_request_success", server.name) - counter(
        before, "nv_inference_request_success", server.name
    )
    executions = counter(after, "nv_inference_exec_count", server.name) - counter(
        before, "nv_inference_exec_count", server.name
    )
    assert requests == clients * per_client
    assert executions < requests, f"{requests} requests in {executions} executions: the batcher never batched"


MALFORMED = {
    "wrong shape": {"tensor": np.zeros((2, 1, 8, 9), np.float32)},
    "wrong channels": {"images": np.zeros((2, 8, 8, 3), np.uint8)},
    "wrong dtype": {"images": np.zeros((2, 8, 8, 1), np.int32)},
    "float64 tensor": {"tensor": np.zeros((2, 1, 8, 8), np.float64)},
    "NaN": {"tensor": np.full((2, 1, 8, 8), np.nan, np.float32)},
    "Inf": {"tensor": np.full((1, 1, 8, 8), np.inf, np.float32)},
    "0 x 0 image": {"images": np.zeros((1, 0, 0, 1), np.uint8)},
    "empty batch": {"images": np.zeros((0, 8, 8, 1), np.uint8)},
    "both inputs": {"images": np.zeros((1, 8, 8, 1), np.uint8), "tensor": np.zeros((1, 1, 8, 8), np.float32)},
    "too large a batch": {"images": np.zeros((MAX_BATCH + 1, 8, 8, 1), np.uint8)},
}
MODEL_SIDE = {"NaN": "NaN or Inf", "Inf": "NaN or Inf", "0 x 0 image": "no pixels", "both inputs": "both"}


def one_line_client_error(message: str) -> None:
    """What a client sees of a refused request: one line, nothing of the server's insides."""
    assert "\n" not in message.strip() and "Traceback" not in message and ".py" not in message, message


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_request_gets_a_400_and_the_server_keeps_serving(
    server: ServeProcess, nano_model, digits_test_images, case: str
) -> None:
    """Issue #15 F14: HTTP 400 with a one-line message, never a 500 with the server's traceback."""
    from tritonclient.utils import InferenceServerException

    client = http_client(server)
    with pytest.raises(InferenceServerException) as err:
        http_infer(client, server.name, MALFORMED[case])
    assert err.value.status() == "400", err.value.message()
    one_line_client_error(err.value.message())
    if case in MODEL_SIDE:
        assert MODEL_SIDE[case] in err.value.message()
    images = digits_test_images[0][:4]
    good = http_infer(client, server.name, {"images": images})
    np.testing.assert_array_equal(good.as_numpy("top_k"), nano_model.predict(images, top_k=5).indices)


@pytest.mark.parametrize("case", list(MODEL_SIDE))
def test_grpc_model_side_errors_are_invalid_argument(server: ServeProcess, case: str) -> None:
    import tritonclient.grpc as tg
    from tritonclient.utils import InferenceServerException, np_to_triton_dtype

    inputs = []
    for key, arr in MALFORMED[case].items():
        t = tg.InferInput(key, list(arr.shape), np_to_triton_dtype(arr.dtype))
        t.set_data_from_numpy(arr)
        inputs.append(t)
    with pytest.raises(InferenceServerException) as err:
        tg.InferenceServerClient(server.grpc_url).infer(server.name, inputs, client_timeout=30.0)
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT", err.value.message()
    one_line_client_error(err.value.message())
    assert MODEL_SIDE[case] in err.value.message()


def test_a_nan_request_fails_alone_in_its_batch(server: ServeProcess, nano_model, digits_test_images) -> None:
    """Issue #15 F13: three valid tensors and one NaN tensor sent together (the dynamic batcher
    runs them as one batch of the preferred size 4): the NaN one gets its 400, the others
    their results. Repeated until Triton's metrics show the four ran in one execution."""
    from tritonclient.utils import InferenceServerException

    images = digits_test_images[0][:3]
    x = nano_model.preprocess(images)
    want = nano_model.predict(images, top_k=5).indices
    together = 0
    for _ in range(5):
        barrier = threading.Barrier(4)
        results: dict[int, object] = {}

        def send(i: int, barrier: threading.Barrier = barrier, results: dict = results) -> None:
            client = http_client(server)
            tensor = np.full((1, 1, 8, 8), np.nan, np.float32) if i == 3 else x[i : i + 1]
            barrier.wait(timeout=30)
            try:
                results[i] = http_infer(client, server.name, {"tensor": tensor}).as_numpy("top_k")
            except InferenceServerException as exc:
                results[i] = exc

        before = server.metrics()
        threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        after = server.metrics()
        for i in range(3):
            assert isinstance(results[i], np.ndarray), f"valid request {i} failed: {results[i]}"
            np.testing.assert_array_equal(results[i], want[i : i + 1])
        assert isinstance(results[3], InferenceServerException) and results[3].status() == "400"
        assert "NaN or Inf" in results[3].message()
        executions = counter(after, "nv_inference_exec_count", server.name) - counter(
            before, "nv_inference_exec_count", server.name
        )
        together += executions == 1
        if together:
            break
    assert together, "the four requests never ran as one batch: the test proved nothing"


def test_no_inputs_is_refused(server: ServeProcess) -> None:
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException):
        http_client(server).infer(server.name, [])
    assert http_client(server).is_model_ready(server.name)


def test_sigterm_stops_cleanly(serve_factory, nano_artifacts) -> None:
    """SIGTERM -> exit 0, the summary line, and no Triton process left. Its own server: stopping
    the module's would leave the tests that run after this one without a server."""
    server = serve_factory(nano_artifacts.int8_onnx)
    assert server.triton_pids, "no tritonserver child found"
    code = server.stop(signal.SIGTERM, linger_s=2)
    assert code == 0, server.stderr()
    assert "stopped (SIGTERM)" in server.stderr()
    assert not server.lingering, [describe(p) for p, _ in server.lingering]
    assert not server.running_children()
    # no copy of the model left in the temp folder by Triton (edgevit removes its own)
    left = [
        f
        for f in Path(tempfile.gettempdir()).glob("folder*/config.pbtxt")
        if f.stat().st_mtime >= server.started_at and f'name: "{server.name}"' in f.read_text(errors="replace")
    ]
    assert not left, left


@pytest.mark.slow
def test_sigint_unbatched_two_instances(serve_factory, nano_artifacts, nano_model, digits_test_images) -> None:
    """Ctrl-C (SIGINT) stops a server started without dynamic batching and with two instances."""
    s = serve_factory(Path(nano_artifacts.fp32_onnx), ["--no-dynamic-batching", "--instances", "2"], name="fp32")
    config = http_client(s).get_model_config("fp32")
    assert "dynamic_batching" not in config and config["instance_group"][0]["count"] == 2
    images = digits_test_images[0][:5]
    from edgevit import runtime

    with runtime.load(nano_artifacts.fp32_onnx, threads=1) as fp32:
        want = fp32.predict(images, top_k=5).indices
    np.testing.assert_array_equal(http_infer(http_client(s), "fp32", {"images": images}).as_numpy("top_k"), want)
    assert s.stop(signal.SIGINT, linger_s=2) == 0, s.stderr()
    assert "stopped (SIGINT)" in s.stderr()
    assert not s.lingering, [describe(p) for p, _ in s.lingering]
    assert not s.running_children()


def http_code(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def serve_command(artifact: Path, ports: list[int], name: str = "nano") -> list[str]:
    http, grpc, metrics = ports
    return [
        sys.executable,
        "-c",
        "import sys; from edgevit.cli import main; sys.exit(main())",
        "serve",
        str(artifact),
        "--name",
        name,
        "--host",
        LOOPBACK,
        "--http-port",
        str(http),
        "--grpc-port",
        str(grpc),
        "--metrics-port",
        str(metrics),
        "--threads",
        "1",
    ]


def popen_serve(cmd: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with open(log, "w") as err:
        return subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err, text=True, start_new_session=True
        )


@pytest.mark.slow
def test_ready_only_when_the_model_answers(nano_artifacts, tmp_path: Path) -> None:
    """Issue #17 item 8: from the first moment /v2/health/ready answers 200, the model answers
    too (a readiness probe never sends traffic early), and the ready line comes no earlier."""
    ports = free_ports(3)
    log = tmp_path / "serve.log"
    proc = popen_serve(serve_command(nano_artifacts.int8_onnx, ports), log)
    base = f"http://{LOOPBACK}:{ports[0]}"
    seen = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            said_ready = "ready in" in log.read_text()
            health = http_code(f"{base}/v2/health/ready")
            if health == 200:
                seen.append(("health 200", http_code(f"{base}/v2/models/nano/ready")))
                break
            seen.append(("health", health, said_ready))
            assert not said_ready, f"edgevit serve said ready while /v2/health/ready answered {health}"
            time.sleep(0.05)
        assert seen and seen[-1] == ("health 200", 200), seen[-5:]
        while "ready in" not in log.read_text() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)  # connecting PyTriton's handlers; requests sent now wait for them
    finally:
        tree = [(p, proc_start_time(p)) for p in descendants(proc.pid)]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()
        time.sleep(0.5)
        assert not [describe(p) for p, t in tree if alive(p, t)]


@pytest.mark.slow
def test_ctrl_c_while_loading_is_an_interruption(nano_artifacts, tmp_path: Path) -> None:
    """Issue #17 item 8: Ctrl-C (SIGINT to the whole process group, as a terminal sends it)
    while Triton loads the model: exit 130, a message that says so (not "could not load"),
    and no process left."""
    ports = free_ports(3)
    log = tmp_path / "serve.log"
    proc = popen_serve(serve_command(nano_artifacts.int8_onnx, ports), log)
    seen: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 120
        triton = []
        while not triton and time.monotonic() < deadline and proc.poll() is None:
            for p in descendants(proc.pid):
                seen.setdefault(p, proc_start_time(p))
            triton = [p for p in seen if "tritonserver" in describe(p)]
            time.sleep(0.02)
        assert triton, f"tritonserver never started: {log.read_text()}"
        from edgevit.serve.server import shm_region_prefix

        shm = shm_region_prefix(triton[0])
        workspace = str(Path(os.readlink(f"/proc/{triton[0]}/exe")).parents[2])  # <ws>/tritonserver/bin/tritonserver
        assert shm and "pytriton" in workspace
        os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    err = log.read_text()
    assert code == 130, err
    assert "interrupted (SIGINT) while loading model 'nano'" in err and "could not" not in err, err
    assert "Traceback" not in err, err
    time.sleep(0.5)
    # also the processes Triton started after the signal (orphans by now): by their workspace
    for p in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if workspace in (p / "cmdline").read_bytes().decode(errors="replace"):
                seen.setdefault(int(p.name), proc_start_time(int(p.name)))
    left = [describe(p) for p, t in seen.items() if alive(p, t)]
    for p, t in seen.items():  # never leave them to the next test
        if alive(p, t):
            os.kill(p, signal.SIGKILL)
    assert not left, left
    assert not list(Path("/dev/shm").glob(shm + "*")), "Triton's shared memory left behind"


@pytest.mark.slow
def test_16_clients_a_quarter_bad_fail_no_valid_request_and_leave_nothing(
    serve_factory, nano_artifacts, nano_model, digits_test_images
) -> None:
    """Issue #15 done-when: 16 clients, a quarter of the requests malformed or NaN: 0 valid
    requests fail, every bad one gets its own 400; then SIGINT while 4 clients keep sending
    (F15's repro): exit 0 and no process of the server's tree survives."""
    from tritonclient.utils import InferenceServerException

    s = serve_factory(
        Path(nano_artifacts.int8_onnx), ["--max-queue-delay-us", "5000", "--preferred-batch-size", "8", "16"]
    )
    images = digits_test_images[0]
    tensors = nano_model.preprocess(images[:64])
    top = nano_model.predict(images[:64], top_k=5).indices
    bad_kinds = [
        {"tensor": np.full((1, 1, 8, 8), np.nan, np.float32)},
        {"tensor": np.concatenate([tensors[:1], np.full((1, 1, 8, 8), np.inf, np.float32)])},
        {"images": np.zeros((1, 0, 0, 1), np.uint8)},
        {"images": images[:1], "tensor": tensors[:1]},
        {"tensor": np.zeros((1, 1, 8, 9), np.float32)},
    ]
    clients, per_client = 16, 24
    valid_failed: list[str] = []
    bad_answers: list[str] = []
    valid_ok = [0]
    before = s.metrics()

    def run(c: int) -> None:
        client = http_client(s)
        try:
            for i in range(per_client):
                if (c + i) % 4 == 0:  # a quarter of all requests, spread over every client
                    try:
                        http_infer(client, s.name, bad_kinds[(c + i) // 4 % len(bad_kinds)])
                        bad_answers.append("answered")
                    except InferenceServerException as exc:
                        bad_answers.append(str(exc.status()))
                        one_line_client_error(exc.message())
                    continue
                start, n = (c * 7 + i * 3) % 60, 1 + (c + i) % 3
                inputs = {"tensor": tensors[start : start + n]} if i % 2 else {"images": images[start : start + n]}
                try:
                    got = http_infer(client, s.name, inputs).as_numpy("top_k")
                except InferenceServerException as exc:
                    valid_failed.append(f"client {c} request {i}: {exc.status()} {exc.message()[:200]}")
                    continue
                if np.array_equal(got, top[start : start + n]):
                    valid_ok[0] += 1
                else:
                    valid_failed.append(f"client {c} request {i}: wrong result")
        finally:
            client.close()

    threads = [threading.Thread(target=run, args=(c,), daemon=True) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads)
    after = s.metrics()
    assert not valid_failed, f"{len(valid_failed)} valid requests failed: {valid_failed[:5]}"
    assert valid_ok[0] == clients * per_client * 3 // 4
    assert bad_answers == ["400"] * (clients * per_client // 4)
    executions = counter(after, "nv_inference_exec_count", s.name) - counter(before, "nv_inference_exec_count", s.name)
    assert executions < clients * per_client, "the dynamic batcher never batched: nothing was mixed"

    # F15: stop while clients keep sending
    stop = threading.Event()

    def loop() -> None:
        client = http_client(s)
        while not stop.is_set():
            try:
                http_infer(client, s.name, {"images": images[:3]})
            except Exception:
                time.sleep(0.05)

    loopers = [threading.Thread(target=loop, daemon=True) for _ in range(4)]
    for t in loopers:
        t.start()
    try:
        time.sleep(2)
        s.record_children()
        assert any("triton_python_backend_stub" in describe(p) for p, _ in s.triton_pids)
        assert s.stop(signal.SIGINT, linger_s=2) == 0, s.stderr()
    finally:
        stop.set()
    assert "stopped (SIGINT)" in s.stderr()
    assert not s.lingering, [describe(p) for p, _ in s.lingering]


@pytest.mark.slow
def test_a_model_triton_cannot_load_fails_start_in_one_line(monkeypatch: pytest.MonkeyPatch, nano_artifacts) -> None:
    """The model is loaded by Triton at its startup: when that fails, start() says why in one
    line as soon as Triton exits (PyTriton alone would wait 120 s), and leaves no process."""
    from edgevit.errors import BackendError
    from edgevit.serve import server as server_mod

    monkeypatch.setattr(
        server_mod, "REQUEST_HOOK", server_mod.REQUEST_HOOK + "\nraise RuntimeError('boom in the stub')\n"
    )
    http, grpc, metrics = free_ports(3)
    cfg = server_mod.ServeConfig(http_port=http, grpc_port=grpc, metrics_port=metrics, threads=1, model_name="nano")
    srv = server_mod.TritonModelServer(nano_artifacts.int8_onnx, cfg)
    with pytest.raises(BackendError, match=r"Triton could not load model 'nano': .*boom in the stub") as err:
        srv.start()
    assert "\n" not in str(err.value)
    assert srv.models == [] and srv.left_running == []
    # this server's processes only (another test's server may still be up: it has its own workspace)
    assert srv._workspace and not [describe(p) for p in descendants(os.getpid()) if str(srv._workspace) in describe(p)]
