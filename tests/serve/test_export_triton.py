"""`edgevit export-triton`: generated model repositories parse against Triton's real schema
(tritonclient's model_config_pb2 + protobuf text_format) and carry the right platform,
batching, instance groups and files; deliberately wrong configs and settings are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from serve_helpers import missing

from edgevit.artifacts import ArtifactInfo, sha256_file
from edgevit.config import ViTConfig
from edgevit.errors import ArtifactError, InputError
from edgevit.preprocess import Preprocess
from edgevit.trt.device import DeviceInfo
from edgevit.trt.manifest import Manifest, TensorSpec, manifest_path

REASON = missing("tritonclient.grpc.model_config_pb2", "google.protobuf.text_format")
pytestmark = pytest.mark.skipif(bool(REASON), reason=REASON or "ok")


def fake_engine(
    path: Path, cc: str = "8.7", gpu: str = "Orin", profile: tuple[int, int, int] = (1, 8, 32), plan: bytes = b""
) -> Path:
    """A plan file (not a real engine: Triton is not run on it) with a valid manifest."""
    path.write_bytes(plan or b"PLAN" + cc.encode() * 50)
    info = ArtifactInfo(ViTConfig(), Preprocess(8, 1, (0.5,), (0.25,)), [f"d{i}" for i in range(10)], precision="int8")
    lo, opt, hi = profile
    Manifest(
        engine_file=path.name,
        engine_sha256=sha256_file(path),
        engine_bytes=path.stat().st_size,
        tensorrt_version="10.3.0",
        tensorrt_module="tensorrt",
        device=DeviceInfo(gpu, cc),
        precision="int8",
        build_mode="strongly-typed",
        profile={"min": [lo, 1, 8, 8], "opt": [opt, 1, 8, 8], "max": [hi, 1, 8, 8]},
        io=[
            TensorSpec("images", "input", [-1, 1, 8, 8], "float32"),
            TensorSpec("logits", "output", [-1, 10], "float32"),
        ],
        source_onnx="model.int8.onnx",
        source_sha256="00" * 32,
        artifact=info,
    ).save(manifest_path(path))
    return path


def test_onnx_repository(tmp_path: Path, nano_artifacts) -> None:
    from edgevit.serve.repository import RepositoryOptions, check_repository, export_triton

    opts = RepositoryOptions(name="digits", max_batch=64, preferred_batch_sizes=[8, 16], instances=2)
    r = export_triton([nano_artifacts.int8_onnx], tmp_path / "repo", opts)
    configs = check_repository(tmp_path / "repo")
    c = configs["digits"]
    assert c.platform == "onnxruntime_onnx" and c.max_batch_size == 64
    assert list(c.input[0].dims) == [1, 8, 8] and c.input[0].name == "images"
    assert list(c.output[0].dims) == [10] and c.output[0].label_filename == "labels.txt"
    assert list(c.dynamic_batching.preferred_batch_size) == [8, 16]
    assert c.dynamic_batching.max_queue_delay_microseconds == 500
    assert c.instance_group[0].count == 2 and c.instance_group[0].kind == c.instance_group[0].KIND_CPU
    assert (r.model_dir / "1" / "model.onnx").read_bytes() == Path(nano_artifacts.int8_onnx).read_bytes()
    labels = (r.model_dir / "labels.txt").read_text().splitlines()
    info = json.loads((r.model_dir / "edgevit.json").read_text())
    assert labels == info["artifact"]["class_names"] and len(labels) == 10
    assert r.config_path.read_text() == r.config_text


def test_onnx_with_tensorrt_int8_provider(tmp_path: Path, nano_artifacts) -> None:
    from edgevit.serve.repository import RepositoryOptions, export_triton

    opts = RepositoryOptions(ort_tensorrt="int8", trt_cache_dir="/models/trt-cache")
    r = export_triton([nano_artifacts.int8_onnx], tmp_path / "repo", opts)
    from edgevit.serve.pbtxt import parse_config

    c = parse_config(r.config_text)
    acc = c.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert acc.name == "tensorrt" and acc.parameters["precision_mode"] == "INT8"
    assert acc.parameters["trt_engine_cache_path"] == "/models/trt-cache"
    assert c.instance_group[0].kind == c.instance_group[0].KIND_GPU
    with pytest.raises(InputError, match="not an INT8 Q/DQ model"):
        export_triton([nano_artifacts.fp32_onnx], tmp_path / "repo2", opts)


def test_plan_repository_uses_the_engine_profile(tmp_path: Path) -> None:
    from edgevit.serve.repository import RepositoryOptions, check_repository_model, export_triton

    engine = fake_engine(tmp_path / "nano.int8.engine", profile=(1, 8, 32))
    r = export_triton([engine], tmp_path / "repo")
    c = check_repository_model(r.model_dir)
    assert c.platform == "tensorrt_plan" and c.max_batch_size == 32  # the profile's max by default
    assert list(c.input[0].dims) == [1, 8, 8] and c.instance_group[0].kind == c.instance_group[0].KIND_GPU
    assert (r.model_dir / "1" / "model.plan").read_bytes() == engine.read_bytes()
    assert json.loads((r.model_dir / "edgevit.json").read_text())["plans"][0]["tensorrt_version"] == "10.3.0"
    assert export_triton([engine], tmp_path / "r2", RepositoryOptions(max_batch=16)).max_batch == 16
    with pytest.raises(InputError, match="optimization profile"):
        export_triton([engine], tmp_path / "r3", RepositoryOptions(max_batch=64))
    with pytest.raises(InputError, match="GPU"):
        export_triton([engine], tmp_path / "r4", RepositoryOptions(kind="cpu"))
    assert not (tmp_path / "r3").exists()  # refused before anything was written


def test_several_plans_map_by_compute_capability(tmp_path: Path) -> None:
    from edgevit.serve.repository import check_repository_model, export_triton

    orin = fake_engine(tmp_path / "orin.engine", "8.7", "Orin", (1, 8, 32))
    a100 = fake_engine(tmp_path / "a100.engine", "8.0", "A100", (1, 16, 64))
    r = export_triton([orin, a100], tmp_path / "repo")
    c = check_repository_model(r.model_dir)
    assert dict(c.cc_model_filenames) == {"8.7": "model.plan", "8.0": "model.sm80.plan"}
    assert c.max_batch_size == 32  # within every plan's profile
    assert (r.model_dir / "1" / "model.sm80.plan").read_bytes() == a100.read_bytes()
    with pytest.raises(InputError, match="same compute capability"):
        export_triton([orin, fake_engine(tmp_path / "orin2.engine", "8.7")], tmp_path / "r2")


def test_engine_profile_not_starting_at_one_is_refused(tmp_path: Path) -> None:
    from edgevit.serve.repository import export_triton

    with pytest.raises(ArtifactError, match="min batch"):
        export_triton([fake_engine(tmp_path / "m.engine", profile=(4, 8, 32))], tmp_path / "repo")


def test_deliberately_wrong_configs_are_refused(tmp_path: Path, nano_artifacts) -> None:
    from edgevit.serve.pbtxt import parse_config, render, validated_text
    from edgevit.serve.repository import check_repository_model, export_triton

    good = 'name: "m"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
    io = 'input { name: "x" data_type: TYPE_FP32 dims: [ 3 ] }\noutput { name: "y" data_type: TYPE_FP32 dims: [ 2 ] }\n'
    parse_config(good + io)
    for bad, what in (
        (good.replace("max_batch_size", "max_batch_sizes") + io, "misspelled field"),
        (good + io.replace("TYPE_FP32", "TYPE_FLOAT", 1), "unknown enum"),
        (good.replace("8", '"eight"') + io, "wrong type"),
        (good + io + "instance_group { kind: KIND_TPU }\n", "unknown kind"),
        (good + io + "dynamic_batching { max_queue_delay: 5 }\n", "misspelled nested field"),
    ):
        with pytest.raises(ArtifactError, match=f"{what} does not follow Triton's model configuration schema"):
            parse_config(bad, where=what)
    for message, problem in (
        (
            {
                "name": "m",
                "platform": "onnxruntime_onnx",
                "max_batch_size": 4,
                "dynamic_batching": {"preferred_batch_size": [8]},
            },
            "preferred",
        ),
        ({"name": "m", "platform": "tensorrt_plan", "max_batch_size": 4}, "no inputs"),
    ):
        with pytest.raises(ArtifactError, match=problem):
            validated_text(message)
    assert "max_batch_size: 4" in render({"max_batch_size": 4})

    r = export_triton([nano_artifacts.int8_onnx], tmp_path / "repo")
    r.config_path.write_text(r.config_text.replace("dims", "dimensions", 1))
    with pytest.raises(ArtifactError, match="schema"):
        check_repository_model(r.model_dir)
    r.config_path.write_text(r.config_text)
    (r.model_dir / "labels.txt").unlink()
    with pytest.raises(ArtifactError, match="label file"):
        check_repository_model(r.model_dir)


def test_cli_export_triton(tmp_path: Path, nano_artifacts, capsys: pytest.CaptureFixture[str]) -> None:
    from edgevit.cli import main

    code = main(
        [
            "export-triton",
            str(nano_artifacts.int8_onnx),
            "--out",
            str(tmp_path / "repo"),
            "--name",
            "nano",
            "--max-batch",
            "16",
            "--preferred-batch-size",
            "4",
            "8",
            "--kind",
            "gpu",
        ]
    )
    assert code == 0
    assert "onnxruntime_onnx, max_batch_size 16" in capsys.readouterr().out
    text = (tmp_path / "repo" / "nano" / "config.pbtxt").read_text()
    assert "KIND_GPU" in text and "preferred_batch_size: [ 4, 8 ]" in text
    code = main(
        [
            "export-triton",
            str(nano_artifacts.int8_onnx),
            "--out",
            str(tmp_path / "r2"),
            "--max-batch",
            "4",
            "--preferred-batch-size",
            "8",
        ]
    )
    assert code == 2 and "preferred batch sizes" in capsys.readouterr().err


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize(
    "case",
    ["out is a file", "out lies under a file", "model folder is a file", "name ..", "name .", "cache without trt"],
)
def test_cli_export_triton_refusals_write_nothing(
    tmp_path: Path, nano_artifacts, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    """Issue #15 F10 and the -o FILE row, issue #17 item 7: one line on stderr, exit 2, and not
    a byte written (outside --out either)."""
    from edgevit.cli import main

    work = tmp_path / "work"
    work.mkdir()
    (work / "file.txt").write_text("mine")
    (work / "repo").mkdir()
    (work / "repo" / "taken").write_text("a file where a model folder would go")
    out, extra = {
        "out is a file": (work / "file.txt", []),
        "out lies under a file": (work / "file.txt" / "repo", []),
        "model folder is a file": (work / "repo", ["--name", "taken"]),
        "name ..": (work / "repo" / "sub", ["--name", ".."]),
        "name .": (work / "repo", ["--name", "."]),
        "cache without trt": (work / "new", ["--trt-cache-dir", "/models/trt-cache"]),
    }[case]
    before = tree(tmp_path)
    code = main(["export-triton", str(nano_artifacts.int8_onnx), "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("edgevit: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert tree(tmp_path) == before
    assert (work / "file.txt").read_text() == "mine"


def test_trt_cache_dir_needs_the_tensorrt_provider(tmp_path: Path) -> None:
    from edgevit.serve.repository import RepositoryOptions, export_triton

    engine = fake_engine(tmp_path / "m.engine")
    with pytest.raises(InputError, match=r"--trt-cache-dir .* needs --ort-tensorrt"):
        export_triton([engine], tmp_path / "repo", RepositoryOptions(trt_cache_dir="/cache"))
    assert not (tmp_path / "repo").exists()
