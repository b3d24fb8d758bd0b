from __future__ import annotations

import json

import numpy as np
import pytest

from edgevit import runtime
from edgevit.errors import InputError
from edgevit.metrics import compare_logits
from edgevit.validate import validate


def test_compare_logits_by_hand():
    ref = np.array([[2.0, 0.0], [0.0, 1.0]])
    same = compare_logits(ref, ref)
    assert same["agreement"] == 100.0 and same["mean_kl"] == pytest.approx(0.0, abs=1e-9)
    assert same["cosine"] == pytest.approx(1.0)
    flipped = compare_logits(ref, ref[:, ::-1].copy())
    assert flipped["agreement"] == 0.0 and flipped["mean_kl"] > 0.1
    assert flipped["max_abs_logit_diff"] == 2.0


def test_validate_fp32_against_int8_writes_json_and_markdown(nano_artifacts, digits, tmp_path):
    with runtime.load(nano_artifacts.fp32_onnx) as ref, runtime.load(nano_artifacts.int8_onnx) as cand:
        report = validate(ref, cand, digits.test.images, digits.test.labels, "digits:test")
        logits = ref.logits(digits.test.images)
    assert report.reference.top1 == pytest.approx(100 * (logits.argmax(1) == digits.test.labels).mean())
    assert report.reference.top5 is not None and report.reference.top5 >= report.reference.top1
    assert report.drop == pytest.approx(report.reference.top1 - report.candidate.top1)
    assert len(report.reference.per_class) == 10
    assert report.passed, report.failures
    js, md = report.save(tmp_path)
    data = json.loads(js.read_text())
    assert data["passed"] is True and data["num_images"] == len(digits.test)
    text = md.read_text()
    assert "top-1 agreement" in text and "| 9 |" in text


def test_gates_fail_when_the_candidate_is_worse(nano_artifacts, digits):
    with runtime.load(nano_artifacts.fp32_onnx) as ref, runtime.load(nano_artifacts.int8_onnx) as cand:
        # Shuffled labels for the candidate's view is not possible; instead demand the impossible.
        report = validate(ref, cand, digits.test.images, digits.test.labels, max_drop=-5.0, min_agreement=100.1)
    assert not report.passed
    assert len(report.failures) == 2


def test_mismatched_inputs(nano_artifacts, digits):
    with runtime.load(nano_artifacts.fp32_onnx) as ref, pytest.raises(InputError, match="labels"):
        validate(ref, ref, digits.test.images[:3], digits.test.labels[:2])
