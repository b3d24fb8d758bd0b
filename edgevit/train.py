"""Train a ViT classifier: AdamW, linear warm-up then cosine decay, label smoothing,
light augmentation, validation every epoch, best checkpoint kept, resumable.

Outputs in ``out_dir``:

* ``checkpoint.pt``: the best epoch (by validation accuracy). Holds everything needed to
  rebuild and use the model: weights, model config, preprocessing, class names, data
  source, metrics. Loads with ``torch.load(weights_only=True)``.
* ``last.pt``: the latest epoch plus optimizer/scheduler state, for ``--resume``.
* ``metrics.json`` and ``training_curve.png``.

Every epoch draws its shuffling, augmentation and dropout from ``(seed, epoch)``, so a run
is repeatable and a resumed run continues exactly where the interrupted one was.
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgevit.artifacts import ArtifactInfo, write_bytes_atomic, write_json_atomic
from edgevit.config import TrainConfig, ViTConfig, preset
from edgevit.data import Dataset, Split, load_dataset
from edgevit.errors import ArtifactError, DataError, EdgeVitError
from edgevit.model import VisionTransformer
from edgevit.preprocess import Preprocess, fit_preprocess

CHECKPOINT_FORMAT = "edgevit-checkpoint/1"


@dataclass
class TrainResult:
    checkpoint: Path
    metrics: dict[str, Any]


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name in ("cls_token", "pos_embed") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Linear warm-up to 1, then cosine decay to ``min_ratio``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def augment_batch(images: np.ndarray, rng: np.random.Generator, hflip: bool, p_shift: float = 0.5) -> np.ndarray:
    """Random shifts of up to 1/8 of the side (edge padding, then a random crop back to
    size) on a fraction ``p_shift`` of a uint8 N x H x W x C batch, and optional flips.
    On 8x8 digits one pixel is 1/8 of the image: shifting every image hurts, half helps."""
    n, h, w, _ = images.shape
    pad = max(1, h // 8)
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    shift = rng.random(n) < p_shift
    dy = np.where(shift, rng.integers(0, 2 * pad + 1, size=n), pad)
    dx = np.where(shift, rng.integers(0, 2 * pad + 1, size=n), pad)
    out = np.empty_like(images)
    for i in range(n):
        out[i] = padded[i, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
    if hflip:
        flip = rng.random(n) < 0.5
        out[flip] = out[flip, :, ::-1]
    return out


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, pre: Preprocess, batch_size: int = 256) -> tuple[float, float]:
    """Return (mean cross-entropy loss, top-1 accuracy) on a split."""
    model.eval()
    loss_sum, correct = 0.0, 0
    for start in range(0, len(split), batch_size):
        x = torch.from_numpy(pre(split.images[start : start + batch_size]))
        y = torch.from_numpy(split.labels[start : start + batch_size])
        logits = model(x)
        loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    return loss_sum / len(split), correct / len(split)


def _save_torch(path: Path, obj: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes_atomic(path, buf.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and check a checkpoint written by :func:`train` (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"checkpoint {path} does not exist; train one with `edgevit train`")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ArtifactError(f"checkpoint {path} is corrupt or not a torch file ({msg}); retrain or restore it") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ArtifactError(
            f"{path} is not an edgevit checkpoint (format {CHECKPOINT_FORMAT}); train with `edgevit train`"
        )
    for key in ("model", "model_config", "preprocess", "class_names"):
        if key not in ckpt:
            raise ArtifactError(f"checkpoint {path} lacks {key!r}; it is incomplete, retrain")
    return ckpt


def checkpoint_info(ckpt: dict[str, Any], source_sha256: str = "") -> ArtifactInfo:
    return ArtifactInfo(
        model_config=ViTConfig.from_dict(ckpt["model_config"]),
        preprocess=Preprocess.from_dict(ckpt["preprocess"]),
        class_names=list(ckpt["class_names"]),
        precision="fp32",
        source_sha256=source_sha256,
        data=str(ckpt.get("data", "")),
        extra={"metrics": {k: v for k, v in ckpt.get("metrics", {}).items() if k != "history"}},
    )


def model_from_checkpoint(ckpt: dict[str, Any]) -> VisionTransformer:
    model = VisionTransformer(ViTConfig.from_dict(ckpt["model_config"]))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise ArtifactError(f"checkpoint weights do not fit its model config ({str(exc)[:200]}); retrain") from exc
    return model.eval()


def build_model_config(cfg: TrainConfig, ds: Dataset) -> ViTConfig:
    size = cfg.img_size or ds.image_size
    base = preset(cfg.preset)
    patch = base.patch_size
    if size % patch:
        raise EdgeVitError(
            f"image size {size} is not a multiple of the {cfg.preset} patch size {patch}; pass --img-size"
        )
    return base.replace(img_size=size, in_chans=ds.channels, num_classes=len(ds.class_names))


def train(
    cfg: TrainConfig,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    dataset: Dataset | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train and write the checkpoint, metrics and curve to ``out_dir``."""
    out_dir = Path(out_dir)
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise EdgeVitError("epochs and batch_size must be at least 1")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ds = dataset or load_dataset(cfg.data, size=cfg.img_size, channels=cfg.channels)
    if cfg.img_size and ds.image_size != cfg.img_size:
        raise DataError(f"data images are {ds.image_size} px but --img-size is {cfg.img_size}")
    if len(ds.train) < 2 or len(ds.val) < 1:
        raise DataError(f"{ds.source}: need at least 2 training and 1 validation image")
    model_cfg = build_model_config(cfg, ds)
    pre = fit_preprocess(ds.train.images, size=model_cfg.img_size)

    torch.manual_seed(cfg.seed)
    model = VisionTransformer(model_cfg)
    opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.999))
    steps_per_epoch = math.ceil(len(ds.train) / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    warmup_steps = min(cfg.warmup_epochs * steps_per_epoch, max(1, total_steps // 2))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, warmup_steps, total_steps, cfg.min_lr_ratio))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    history: list[dict[str, float]] = []
    best: dict[str, Any] = {"val_acc": -1.0, "val_loss": float("inf"), "epoch": -1}
    best_state: dict[str, torch.Tensor] | None = None
    start_epoch = 0
    last_path = out_dir / "last.pt"
    if resume:
        if not last_path.is_file():
            raise ArtifactError(f"cannot resume: {last_path} does not exist; train without --resume first")
        last = load_checkpoint(last_path)
        if last.get("train_config", {}).get("seed") != cfg.seed or last["model_config"] != model_cfg.to_dict():
            raise ArtifactError(f"{last_path} was made with another model or seed; resume with the same settings")
        model.load_state_dict(last["model"])
        opt.load_state_dict(last["optimizer"])
        sched.load_state_dict(last["scheduler"])
        history = list(last["history"])
        best = dict(last["best"])
        best_state = last["best_model"]
        start_epoch = int(last["epoch"]) + 1

    def ckpt_payload(state: dict[str, torch.Tensor], metrics: dict[str, Any], epoch: int) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "model": state,
            "model_config": model_cfg.to_dict(),
            "preprocess": pre.to_dict(),
            "class_names": list(ds.class_names),
            "data": ds.source,
            "train_config": cfg.to_dict(),
            "metrics": metrics,
            "epoch": epoch,
        }

    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    prior_time = history[-1]["time_s"] if history else 0.0
    bar = tqdm(range(start_epoch, cfg.epochs), desc="train", unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        rng = np.random.default_rng([cfg.seed, epoch])
        torch.manual_seed(cfg.seed * 100_003 + epoch)
        model.train()
        perm = rng.permutation(len(ds.train))
        loss_sum, correct, seen = 0.0, 0, 0
        for start in range(0, len(perm), cfg.batch_size):
            idx = perm[start : start + cfg.batch_size]
            imgs = ds.train.images[idx]
            if cfg.augment:
                imgs = augment_batch(imgs, rng, cfg.hflip)
            x = torch.from_numpy(pre(imgs))
            y = torch.from_numpy(ds.train.labels[idx])
            logits = model(x)
            loss = loss_fn(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(idx)
        val_loss, val_acc = evaluate(model, ds.val, pre)
        row = {
            "epoch": epoch,
            "lr": opt.param_groups[0]["lr"],
            "train_loss": loss_sum / seen,
            "train_acc": correct / seen,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "time_s": prior_time + time.perf_counter() - t0,
        }
        history.append(row)
        if (val_acc, -val_loss) > (best["val_acc"], -best["val_loss"]):
            best = {"val_acc": val_acc, "val_loss": val_loss, "epoch": epoch}
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", val=f"{val_acc:.3f}", best=f"{best['val_acc']:.3f}")
        if log:
            log(f"epoch {epoch + 1}/{cfg.epochs} loss {row['train_loss']:.4f} val_acc {val_acc:.4f}")
        last = ckpt_payload(model.state_dict(), {"history": history}, epoch)
        last.update(optimizer=opt.state_dict(), scheduler=sched.state_dict(), history=history, best=best)
        last["best_model"] = best_state
        _save_torch(last_path, last)
    bar.close()

    assert best_state is not None  # at least one epoch ran (checked above)
    model.load_state_dict(best_state)
    test_loss, test_acc = evaluate(model, ds.test, pre)
    metrics = {
        "best_epoch": best["epoch"],
        "val_acc": best["val_acc"],
        "val_loss": best["val_loss"],
        "test_acc": test_acc,
        "test_loss": test_loss,
        "epochs": cfg.epochs,
        "train_time_s": history[-1]["time_s"] if history else 0.0,
        "num_params": model.num_params(),
        "history": history,
    }
    ckpt_path = out_dir / "checkpoint.pt"
    _save_torch(ckpt_path, ckpt_payload(best_state, metrics, best["epoch"]))
    write_json_atomic(out_dir / "metrics.json", metrics)
    plot_history(history, out_dir / "training_curve.png", title=f"{cfg.preset} on {Path(ds.source).name}")
    return TrainResult(ckpt_path, metrics)


def plot_history(history: list[dict[str, float]], path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgevit.artifacts import atomic_output

    epochs = [h["epoch"] + 1 for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [h["train_loss"] for h in history], label="train")
    ax1.plot(epochs, [h["val_loss"] for h in history], label="val")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("cross-entropy")
    ax1.legend()
    ax2.plot(epochs, [100 * h["train_acc"] for h in history], label="train")
    ax2.plot(epochs, [100 * h["val_acc"] for h in history], label="val")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("top-1 %")
    ax2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def describe(metrics: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in metrics.items() if k != "history"})
