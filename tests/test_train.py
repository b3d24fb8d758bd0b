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


def test_cli_refuses_nan_learning_rate_in_one_line(tmp_path, capsys):
    from edgevit.cli import main

    assert main(["train", "--lr", "nan", "--out", str(tmp_path), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "lr must be a number" in err


def test_resume_from_a_copied_checkpoint_is_refused(nano_artifacts, tmp_path):
    import shutil

    shutil.copy(nano_artifacts.checkpoint, tmp_path / "last.pt")
    with pytest.raises(ArtifactError, match=r"not a resumable last\.pt"):
        train(TrainConfig(epochs=20, threads=1), tmp_path, resume=True, progress=False)


def test_folder_training_streams_from_disk_with_workers(tmp_path):
    from image_folders import make_image_folder

    root = make_image_folder(tmp_path / "data", {"a": 24, "b": 24}, size=28)
    cfg = TrainConfig(data=str(root), epochs=2, threads=1, workers=1, batch_size=16)
    notes = []
    r = train(cfg, tmp_path / "run", progress=False, log=notes.append)
    ckpt = torch.load(r.checkpoint, weights_only=True)
    assert ckpt["model_config"]["img_size"] == 16  # 28 px images, nano's default cap
    assert any("training at 16 px" in n for n in notes)
    assert len(r.metrics["history"]) == 2


def test_fine_tuning_new_head_and_frozen_backbone(nano_artifacts, tmp_path):
    from edgevit.data import Split, load_digits

    ds = load_digits()
    first3 = [Split(s.images[s.labels < 3], s.labels[s.labels < 3]) for s in (ds.train, ds.val, ds.test)]
    sub = type(ds)(ds.source, ds.class_names[:3], *first3)
    cfg = TrainConfig.finetuning(str(nano_artifacts.checkpoint), epochs=1, threads=1, freeze_backbone=True)
    r = train(cfg, tmp_path, progress=False, dataset=sub)
    new = torch.load(r.checkpoint, weights_only=True)["model"]
    old = torch.load(nano_artifacts.checkpoint, weights_only=True)["model"]
    assert new["head.weight"].shape == (3, 64)
    assert torch.equal(new["blocks.0.attn.qkv.weight"], old["blocks.0.attn.qkv.weight"])  # frozen
    assert any("new head for 3 classes" in n for n in r.metrics["notes"])


@pytest.mark.slow
def test_pretrained_8px_weights_transfer_to_16px(tmp_path):
    """The nano model trained on 8 px digits and fine-tuned at 16 px (position embeddings
    resampled) beats the same model trained at 16 px from scratch for as many epochs."""
    pre = train(TrainConfig(epochs=40, seed=0, threads=1), tmp_path / "8px", progress=False)
    epochs = 6
    tuned = train(
        TrainConfig.finetuning(str(pre.checkpoint), img_size=16, epochs=epochs, seed=0, threads=1),
        tmp_path / "ft16",
        progress=False,
    )
    scratch = train(TrainConfig(img_size=16, epochs=epochs, seed=0, threads=1), tmp_path / "s16", progress=False)
    assert any("resampled from a 4x4 to a 8x8 grid" in n for n in tuned.metrics["notes"])
    assert tuned.metrics["test_acc"] > scratch.metrics["test_acc"] + 0.05
