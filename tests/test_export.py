from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgevit.artifacts import ArtifactInfo, read_onnx_info, sha256_file
from edgevit.errors import ArtifactError, DataError
from edgevit.export import export_onnx
from edgevit.train import load_checkpoint, model_from_checkpoint


def test_graph_is_opset17_with_layernorm_and_a_dynamic_batch(nano_artifacts):
    model = onnx.load(str(nano_artifacts.fp32_onnx))
    onnx.checker.check_model(model, full_check=True)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    ops = {n.op_type for n in model.graph.node}
    assert "LayerNormalization" in ops and "Softmax" in ops and "Conv" in ops
    (inp,) = model.graph.input
    dims = inp.type.tensor_type.shape.dim
    assert inp.name == "images" and dims[0].dim_param == "batch"
    assert [d.dim_value for d in dims[1:]] == [1, 8, 8]


def test_metadata_round_trip(nano_artifacts):
    info = read_onnx_info(nano_artifacts.fp32_onnx)
    ckpt = load_checkpoint(nano_artifacts.checkpoint)
    assert info.model_config.to_dict() == ckpt["model_config"]
    assert info.preprocess.to_dict() == ckpt["preprocess"]
    assert info.class_names == ckpt["class_names"]
    assert info.source_sha256 == sha256_file(nano_artifacts.checkpoint)
    assert info.data == "digits"
    assert info.extra["export"]["max_abs_logit_diff"] <= 1e-3
    assert ArtifactInfo.from_json_dict(info.to_json_dict()) == info


def test_onnx_runtime_matches_pytorch_at_several_batch_sizes(nano_artifacts, digits):
    model = model_from_checkpoint(load_checkpoint(nano_artifacts.checkpoint))
    info = read_onnx_info(nano_artifacts.fp32_onnx)
    sess = ort.InferenceSession(str(nano_artifacts.fp32_onnx), providers=["CPUExecutionProvider"])
    for n in (1, 7, 64):
        x = info.preprocess(digits.test.images[:n])
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        got = sess.run(None, {"images": x})[0]
        assert got.shape == (n, 10)
        np.testing.assert_allclose(got, ref, atol=1e-4)


def test_export_refuses_bad_inputs_and_leaves_nothing(nano_artifacts, tmp_path):
    out = tmp_path / "m.onnx"
    with pytest.raises(ArtifactError, match="does not exist"):
        export_onnx(tmp_path / "missing.pt", out)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(nano_artifacts.checkpoint.read_bytes()[:1000])
    with pytest.raises(ArtifactError, match="corrupt"):
        export_onnx(corrupt, out)
    with pytest.raises(DataError, match="pass --data"):
        export_onnx(nano_artifacts.checkpoint, out, data=str(tmp_path / "no-such-folder"))
    assert list(tmp_path.iterdir()) == [corrupt]


def test_export_fails_when_onnx_runtime_disagrees(nano_artifacts, tmp_path):
    with pytest.raises(ArtifactError, match="differs from PyTorch"):
        export_onnx(nano_artifacts.checkpoint, tmp_path / "m.onnx", tolerance=0.0 - 1.0)
    assert not (tmp_path / "m.onnx").exists()


def test_corrupt_onnx_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="not a readable ONNX model"):
        read_onnx_info(bad)
