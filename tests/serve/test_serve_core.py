"""The request handling behind `edgevit serve` (no Triton needed): several requests merged
into one backend call and split back, results equal to predict(), per-request checks; and
that the CLI stays importable without the optional serving packages."""

from __future__ import annotations

import subprocess
import sys

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
    assert core.stats.requests == 3 and core.stats.images == 9
    assert core.stats.backend_calls == 3  # 9 images in chunks of the model's batch size 4


def test_top_k_is_capped_at_the_number_of_classes(model, digits_test_images) -> None:
    out = InferenceCore(model, top_k=50)([{"images": digits_test_images[0][:1]}])
    assert out[0]["top_k"].shape == (1, 10) and out[0]["top_k"].dtype == np.int64


@pytest.mark.parametrize(
    "request_, message",
    [
        ({}, "neither"),
        ({"images": np.zeros((1, 8, 8, 1), np.uint8), "tensor": np.zeros((1, 1, 8, 8), np.float32)}, "both"),
        ({"images": np.zeros((0, 8, 8, 1), np.uint8)}, "empty"),
        ({"images": np.zeros((1, 8, 8, 1), np.float32)}, "uint8"),
        ({"images": np.zeros((1, 8, 8, 3), np.uint8)}, "channels"),
        ({"tensor": np.zeros((1, 1, 8, 8), np.int32)}, "float32"),
        ({"tensor": np.zeros((1, 1, 9, 8), np.float32)}, "shape"),
        ({"tensor": np.full((1, 1, 8, 8), np.nan, np.float32)}, "NaN"),
    ],
)
def test_bad_requests_raise_one_line_input_errors(model, request_: dict, message: str) -> None:
    with pytest.raises(InputError, match=message) as err:
        InferenceCore(model)([{"images": np.zeros((1, 8, 8, 1), np.uint8)}, request_])
    assert "\n" not in str(err.value)


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
