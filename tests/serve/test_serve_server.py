"""`edgevit serve` end to end: a real Triton server (PyTriton) on free loopback ports with
the trained nano model, queried with tritonclient over HTTP and gRPC.

One server per module (started once, about 5 s); the last test stops it with SIGTERM and
checks the exit code and that no Triton process is left."""

from __future__ import annotations

import re
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from serve_helpers import ServeProcess, describe, missing, start_serve

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
    "empty batch": {"images": np.zeros((0, 8, 8, 1), np.uint8)},
    "both inputs": {"images": np.zeros((1, 8, 8, 1), np.uint8), "tensor": np.zeros((1, 1, 8, 8), np.float32)},
    "too large a batch": {"images": np.zeros((MAX_BATCH + 1, 8, 8, 1), np.uint8)},
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_request_gets_an_error_and_the_server_keeps_serving(
    server: ServeProcess, nano_model, digits_test_images, case: str
) -> None:
    from tritonclient.utils import InferenceServerException

    client = http_client(server)
    with pytest.raises(InferenceServerException) as err:
        http_infer(client, server.name, MALFORMED[case])
    if case in ("NaN", "Inf"):
        assert "NaN or Inf" in str(err.value)
    images = digits_test_images[0][:4]
    good = http_infer(client, server.name, {"images": images})
    np.testing.assert_array_equal(good.as_numpy("top_k"), nano_model.predict(images, top_k=5).indices)


def test_no_inputs_is_refused(server: ServeProcess) -> None:
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException):
        http_client(server).infer(server.name, [])
    assert http_client(server).is_model_ready(server.name)


def test_zz_sigterm_stops_cleanly(server: ServeProcess) -> None:
    """Last in the module: SIGTERM -> exit 0, the summary line, and no Triton process left."""
    assert server.triton_pids, "no tritonserver child found"
    code = server.stop(signal.SIGTERM)
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
    assert s.stop(signal.SIGINT) == 0, s.stderr()
    assert "stopped (SIGINT)" in s.stderr()
    assert not s.lingering, [describe(p) for p, _ in s.lingering]
    assert not s.running_children()
