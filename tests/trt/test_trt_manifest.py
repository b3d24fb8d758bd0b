"""Engine manifests: round trip, integrity (truncated/replaced engine files), and refusal of
engines built for another TensorRT or GPU (device facts mocked)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgevit.artifacts import ArtifactInfo, sha256_file
from edgevit.config import ViTConfig
from edgevit.errors import ArtifactError
from edgevit.preprocess import Preprocess
from edgevit.trt.device import DeviceInfo, JetsonInfo
from edgevit.trt.manifest import Manifest, TensorSpec, check_compatible, load_manifest, manifest_path

ORIN = DeviceInfo(
    "Orin", "8.7", JetsonInfo("NVIDIA Jetson AGX Orin Developer Kit", "36.4.3", "6.2"), "12.6", 2, "12.6.2.post1"
)


def make_manifest(engine: Path, serialized: bytes, **changes: object) -> Manifest:
    engine.write_bytes(serialized)
    info = ArtifactInfo(ViTConfig(), Preprocess(8, 1, (0.5,), (0.25,)), [str(i) for i in range(10)], precision="best")
    values: dict[str, object] = dict(
        engine_file=engine.name,
        engine_sha256=sha256_file(engine),
        engine_bytes=len(serialized),
        tensorrt_version="10.3.0",
        tensorrt_module="tensorrt",
        device=ORIN,
        precision="best",
        build_mode="builder-flags",
        profile={"min": [1, 1, 8, 8], "opt": [8, 1, 8, 8], "max": [32, 1, 8, 8]},
        io=[
            TensorSpec("images", "input", [-1, 1, 8, 8], "float32"),
            TensorSpec("logits", "output", [-1, 10], "float32"),
        ],
        source_onnx="runs/digits-nano/model.int8.onnx",
        source_sha256="ab" * 32,
        artifact=info,
        rebuild_command="edgevit build runs/digits-nano/model.int8.onnx --precision best --batch-profile 1:8:32 -o x.engine",
    )
    values.update(changes)
    m = Manifest(**values)  # type: ignore[arg-type]
    m.save(manifest_path(engine))
    return m


def test_round_trip(tmp_path: Path) -> None:
    engine = tmp_path / "m.best.engine"
    m = make_manifest(engine, b"PLAN" * 100)
    assert manifest_path(engine).name == "m.best.engine.json"
    back = load_manifest(engine)
    assert back.to_dict() == m.to_dict()
    assert back.device.jetson == ORIN.jetson and back.max_batch == 32 and back.input_spec.name == "images"
    assert back.artifact.class_names == m.artifact.class_names
    data = json.loads(manifest_path(engine).read_text())
    for key in (
        "tensorrt_version",
        "device",
        "precision",
        "profile",
        "io",
        "source_sha256",
        "engine_sha256",
        "artifact",
        "built_at",
        "layer_precisions",
        "rebuild_command",
    ):
        assert key in data


def test_missing_manifest(tmp_path: Path) -> None:
    engine = tmp_path / "x.engine"
    engine.write_bytes(b"PLAN")
    with pytest.raises(ArtifactError, match=r"no manifest x\.engine\.json.*edgevit build"):
        load_manifest(engine)


def test_truncated_and_replaced_engine_files(tmp_path: Path) -> None:
    engine = tmp_path / "x.engine"
    make_manifest(engine, b"PLAN" * 100)
    engine.write_bytes(b"PLAN" * 50)
    with pytest.raises(ArtifactError, match="truncated") as err:
        load_manifest(engine)
    assert "edgevit build" in str(err.value)
    engine.write_bytes(b"NALP" * 100)
    with pytest.raises(ArtifactError, match="sha256 differs"):
        load_manifest(engine)


def test_corrupt_manifest(tmp_path: Path) -> None:
    engine = tmp_path / "x.engine"
    make_manifest(engine, b"PLAN")
    manifest_path(engine).write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_manifest(engine)
    manifest_path(engine).write_text(json.dumps({"format": "edgevit-engine/1", "engine_file": "x"}))
    with pytest.raises(ArtifactError, match="malformed"):
        load_manifest(engine)


@pytest.mark.parametrize(
    ("trt_version", "device", "match"),
    [
        ("10.3.1", ORIN, "built with TensorRT 10.3.0 but this is TensorRT 10.3.1"),
        ("8.6.2", ORIN, "not portable across versions"),
        ("10.3.0", DeviceInfo("Xavier", "7.2"), "compute capability differs"),
        ("10.3.0", DeviceInfo("NVIDIA GeForce RTX 3080", "8.7"), "built on a Orin"),
    ],
)
def test_mismatch_refused_with_rebuild_hint(tmp_path: Path, trt_version: str, device: DeviceInfo, match: str) -> None:
    engine = tmp_path / "x.engine"
    m = make_manifest(engine, b"PLAN")
    with pytest.raises(ArtifactError, match=match) as err:
        check_compatible(m, trt_version, device, engine)
    assert "rebuild on this device: edgevit build runs/digits-nano/model.int8.onnx" in str(err.value)
    assert "\n" not in str(err.value)


def test_matching_device_accepted(tmp_path: Path) -> None:
    m = make_manifest(tmp_path / "x.engine", b"PLAN")
    check_compatible(m, "10.3.0.30", ORIN, tmp_path / "x.engine")  # the build number does not matter


def test_rtx_engines_never_run(tmp_path: Path) -> None:
    m = make_manifest(tmp_path / "x.engine", b"PLAN", tensorrt_module="tensorrt_rtx", tensorrt_version="1.7.1")
    with pytest.raises(ArtifactError, match="parse/build check"):
        check_compatible(m, "1.7.1", ORIN, tmp_path / "x.engine")


def test_runtime_load_refuses_mismatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`edgevit.runtime.load("x.engine")` checks the manifest against the (mocked) running TensorRT and GPU."""
    from edgevit import runtime
    from edgevit.runtime import trt_backend
    from edgevit.trt.trtapi import TrtVersion

    engine = tmp_path / "x.engine"
    make_manifest(engine, b"PLAN")
    monkeypatch.setattr(trt_backend, "import_tensorrt", lambda: (object(), TrtVersion.parse("10.3.0")))
    monkeypatch.setattr(trt_backend, "detect_device", lambda index=0: DeviceInfo("Xavier", "7.2"))
    with pytest.raises(ArtifactError, match="compute capability differs"):
        runtime.load(engine)
    monkeypatch.setattr(trt_backend, "import_tensorrt", lambda: (object(), TrtVersion.parse("8.5.2")))
    with pytest.raises(ArtifactError, match=r"TensorRT 8\.5\.2"):
        runtime.load(engine)
    (tmp_path / "y.plan").write_bytes(b"PLAN")
    with pytest.raises(ArtifactError, match="no manifest"):
        runtime.load(tmp_path / "y.plan")
