from __future__ import annotations

import itertools
import json

import pytest
import torch

from edgevit.errors import ArtifactError
from edgevit.train import TrainConfig, load_checkpoint, lr_factor, train


def test_schedule_warms_up_then_decays():
    f = [lr_factor(s, warmup_steps=10, total_steps=100, min_ratio=0.01) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(f[10:]))
    assert f[-1] == pytest.approx(0.01, abs=1e-3)


def test_checkpoint_holds_everything_and_loads_weights_only(nano_artifacts):
    ckpt = torch.load(nano_artifacts.checkpoint, weights_only=True)
    for key in ("model", "model_config", "preprocess", "class_names", "metrics", "data", "train_config"):
        assert key in ckpt
    assert ckpt["class_names"] == [str(i) for i in range(10)]
    assert ckpt["metrics"]["test_acc"] == nano_artifacts.test_acc
    assert nano_artifacts.test_acc > 0.5  # 15 epochs: far above the 10% of chance
    metrics = json.loads((nano_artifacts.run_dir / "metrics.json").read_text())
    assert len(metrics["history"]) == 15
    assert (nano_artifacts.run_dir / "training_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_same_seed_same_model_and_resume_continues_exactly(tmp_path):
    cfg = TrainConfig(epochs=3, seed=3, threads=1)
    small = {"warmup_epochs": 1}
    full = train(TrainConfig(**{**cfg.to_dict(), **small}), tmp_path / "full", progress=False)
    again = train(TrainConfig(**{**cfg.to_dict(), **small}), tmp_path / "again", progress=False)
    a = torch.load(full.checkpoint, weights_only=True)["model"]
    b = torch.load(again.checkpoint, weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)

    # Resuming a finished run would end at once and rewrite the old best as if new: refused.
    part = tmp_path / "part"
    train(TrainConfig(**{**cfg.to_dict(), **small, "epochs": 3}), part, progress=False)
    last = torch.load(part / "last.pt", weights_only=True)
    assert last["epoch"] == 2
    with pytest.raises(ArtifactError, match=r"already has 3 epochs.*--epochs larger than 3"):
        train(TrainConfig(**{**cfg.to_dict(), **small}), part, resume=True, progress=False)


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    import edgevit.train as tr

    cfg = TrainConfig(epochs=3, seed=5, warmup_epochs=1, threads=1)
    straight = train(cfg, tmp_path / "a", progress=False)

    calls = {"n": 0}
    real_eval = tr.evaluate

    def dying_evaluate(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # third epoch's validation: simulate a crash
            raise KeyboardInterrupt
        return real_eval(*args, **kwargs)

    monkeypatch.setattr(tr, "evaluate", dying_evaluate)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "b", progress=False)
    monkeypatch.setattr(tr, "evaluate", real_eval)
    assert not (tmp_path / "b" / "checkpoint.pt").exists()  # nothing half-written
    resumed = train(cfg, tmp_path / "b", resume=True, progress=False)
    a = torch.load(straight.checkpoint, weights_only=True)
    b = torch.load(resumed.checkpoint, weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["metrics"]["test_acc"] == b["metrics"]["test_acc"]


def test_resume_without_a_previous_run_is_refused(tmp_path):
    with pytest.raises(ArtifactError, match="cannot resume"):
        train(TrainConfig(epochs=1), tmp_path, resume=True, progress=False)


def test_missing_and_corrupt_checkpoints(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(ArtifactError, match="corrupt"):
        load_checkpoint(bad)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(ArtifactError, match="not an edgevit checkpoint"):
        load_checkpoint(other)
