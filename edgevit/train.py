"""Train a ViT classifier: AdamW, linear warm-up then cosine decay, label smoothing,
light augmentation, validation every epoch, best checkpoint kept, resumable; from scratch
or from pretrained weights (``init``: an edgevit checkpoint, timm/DeiT or Hugging Face
weights), with position embeddings resampled to a new input size and a new head for a new
class count.

Data: the built-in digits (and a :class:`~edgevit.data.Dataset` handed in) are held in
memory and augmented by random shifts; an image folder is streamed from disk by a DataLoader
with worker processes, augmented by random resized crops (and flips when asked).

Outputs in ``out_dir``:

* ``checkpoint.pt``: the best epoch (by validation accuracy). Holds everything needed to
  rebuild and use the model: weights, model config, preprocessing, class names, data
  source, metrics. Loads with ``torch.load(weights_only=True)``.
* ``last.pt``: the latest epoch plus optimizer/scheduler state, for ``--resume``.
* ``metrics.json`` and ``training_curve.png``.

Every epoch draws its shuffling, augmentation and dropout from ``(seed, epoch)`` (a folder
image's crop from ``(seed, epoch, index)``, whichever worker reads it), so a run is
repeatable and a resumed run continues exactly where the interrupted one was.
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgevit.artifacts import ArtifactInfo, write_bytes_atomic, write_json_atomic
from edgevit.config import MAX_TRAIN_IMG_SIZE, TrainConfig, ViTConfig, default_img_size, preset
from edgevit.data import BUILTIN, Dataset, FolderFiles, Split, image_channels, load_digits, scan_image_folder
from edgevit.errors import ArtifactError, DataError, EdgeVitError, InputError
from edgevit.model import VisionTransformer
from edgevit.preprocess import Preprocess, fit_preprocess, read_image
from edgevit.sysinfo import cpu_count
from edgevit.weights import CHECKPOINT_FORMAT, ForeignWeights, adapt_state_dict, load_torch_file, read_weights

__all__ = ["CHECKPOINT_FORMAT", "TrainConfig", "TrainResult", "train"]
FIT_SAMPLE = 512  # folder images read to measure mean/std (spread over the split)


@dataclass
class TrainResult:
    checkpoint: Path
    metrics: dict[str, Any]


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_wd = p.ndim <= 1 or name in ("cls_token", "pos_embed", "dist_token", "reg_token")
        (no_decay if no_wd else decay).append(p)
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


def random_resized_crop(img: np.ndarray, size: int, scale: float, rng: np.random.Generator) -> np.ndarray:
    """torchvision's ``RandomResizedCrop`` geometry (area share in ``[scale, 1]``, aspect
    ratio in ``[3/4, 4/3]`` log-uniform, ten tries, then the centre) with OpenCV's resize."""
    import cv2

    h, w = img.shape[:2]
    area = h * w
    box = None
    for _ in range(10):
        target = area * rng.uniform(scale, 1.0)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw, ch = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            box = (top, left, ch, cw)
            break
    if box is None:
        side = min(h, w)
        box = ((h - side) // 2, (w - side) // 2, side, side)
    top, left, ch, cw = box
    crop = img[top : top + ch, left : left + cw]
    interp = cv2.INTER_AREA if (ch > size or cw > size) else cv2.INTER_LINEAR
    out = cv2.resize(crop, (size, size), interpolation=interp)
    return out[:, :, None] if out.ndim == 2 else out


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


@torch.no_grad()
def evaluate_loader(model: nn.Module, loader: Any) -> tuple[float, float]:
    """(mean cross-entropy loss, top-1 accuracy) over a DataLoader of (x, y) batches."""
    model.eval()
    loss_sum, correct, n = 0.0, 0, 0
    for x, y in loader:
        logits = model(x)
        loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        n += len(y)
    return loss_sum / n, correct / n


# -- image folders, streamed -------------------------------------------------------------
class FolderImages(torch.utils.data.Dataset):
    """Images of one split read from disk per item: training items get a random resized
    crop (and a flip when asked), drawn from ``(seed, epoch, index)``; evaluation items the
    model's own preprocessing. An item index is ``epoch * len + i`` (see
    :class:`EpochSampler`), so workers need no shared state to know the epoch.

    Args:
        files: ``(path, label)`` pairs.
        pre: the model's preprocessing (size, channels, normalization).
        train: augment (training) or preprocess as the runtime does (evaluation).
        crop_scale, hflip, seed: the augmentation.
    """

    def __init__(
        self,
        files: list[tuple[Path, int]],
        pre: Preprocess,
        train: bool,
        crop_scale: float = 0.35,
        hflip: bool = False,
        seed: int = 0,
    ):
        self.files, self.pre, self.train = files, pre, train
        self.crop_scale, self.hflip, self.seed = crop_scale, hflip, seed

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, int]:
        epoch, i = divmod(int(item), len(self.files))
        path, label = self.files[i]
        try:
            img = read_image(path, self.pre.channels)
        except InputError as exc:
            raise DataError(str(exc)) from exc
        if self.train:
            rng = np.random.default_rng([self.seed, epoch, i])
            img = random_resized_crop(img, self.pre.size, self.crop_scale, rng)
            if self.hflip and rng.random() < 0.5:
                img = img[:, ::-1]
            batch = img[None]
        else:
            batch = self.pre.resize([img])
        return torch.from_numpy(self.pre.normalize(np.ascontiguousarray(batch))[0]), label


class EpochSampler(torch.utils.data.Sampler):
    """Shuffles ``n`` items by ``(seed, epoch)`` and yields ``epoch * n + i``."""

    def __init__(self, n: int, seed: int, shuffle: bool = True):
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def __iter__(self) -> Iterator[int]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n) if self.shuffle else range(self.n)
        base = self.epoch * self.n
        return iter([base + int(i) for i in order])

    def __len__(self) -> int:
        return self.n


def _worker_init(_: int) -> None:
    import cv2

    cv2.setNumThreads(1)  # the loader's processes share the cores with training
    torch.set_num_threads(1)


def _loader(ds: FolderImages, batch_size: int, workers: int, sampler: EpochSampler) -> Any:
    return torch.utils.data.DataLoader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
        worker_init_fn=_worker_init if workers > 0 else None,
        # workers start from a clean process, not a fork of this one: a fork copies the locks
        # of whatever thread pools (OpenCV, ONNX Runtime, OpenMP) are running here, and a
        # worker that inherits a held one hangs forever
        multiprocessing_context="forkserver" if workers > 0 else None,
    )


def _workers(cfg: TrainConfig, n_images: int) -> int:
    if cfg.workers is not None:
        return cfg.workers
    # worker processes pay off only when reading and decoding take longer than starting them
    return 0 if n_images < 256 else min(4, cpu_count())


# -- checkpoints ---------------------------------------------------------------------------
def _save_torch(path: Path, obj: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes_atomic(path, buf.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and check a checkpoint written by :func:`train` (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"checkpoint {path} does not exist; train one with `edgevit train`")
    ckpt = load_torch_file(path, "checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ArtifactError(
            f"{path} is not an edgevit checkpoint (format {CHECKPOINT_FORMAT}); train with `edgevit train` "
            "or make one with `edgevit import`"
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
        extra={
            "metrics": {k: v for k, v in ckpt.get("metrics", {}).items() if k != "history"},
            **({"import": ckpt["import"]} if "import" in ckpt else {}),
        },
    )


def model_from_checkpoint(ckpt: dict[str, Any]) -> VisionTransformer:
    model = VisionTransformer(ViTConfig.from_dict(ckpt["model_config"]))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise ArtifactError(f"checkpoint weights do not fit its model config ({str(exc)[:200]}); retrain") from exc
    return model.eval()


def build_model_config(cfg: TrainConfig, ds: Dataset) -> ViTConfig:
    """The scratch model for an in-memory data set (kept for callers of older releases)."""
    size = cfg.img_size or default_img_size(cfg.preset, ds.image_size)
    return _scratch_config(cfg, size, ds.channels, len(ds.class_names))


def _scratch_config(cfg: TrainConfig, size: int, channels: int, num_classes: int) -> ViTConfig:
    base = preset(cfg.preset)
    if size % base.patch_size:
        raise EdgeVitError(
            f"image size {size} is not a multiple of the {cfg.preset} patch size {base.patch_size}; pass --img-size"
        )
    return base.replace(img_size=size, in_chans=channels, num_classes=num_classes)


# -- training -------------------------------------------------------------------------------
@dataclass
class _Data:
    """What training reads: in memory (``ds``) or streamed from a folder (``files``)."""

    source: str
    class_names: list[str]
    channels: int  # the data's own
    side: int  # the data's image side (in memory) or the first training image's shorter side
    ds: Dataset | None = None
    files: FolderFiles | None = None


def _data(cfg: TrainConfig, dataset: Dataset | None) -> _Data:
    if dataset is not None or str(cfg.data) == BUILTIN:
        ds = dataset or load_digits()
        return _Data(ds.source, list(ds.class_names), ds.channels, ds.image_size, ds=ds)
    files = scan_image_folder(Path(cfg.data))
    train_files = [f for f, _ in files.splits["train"]]
    channels = image_channels(train_files)
    try:
        first = read_image(train_files[0], channels)
    except InputError as exc:
        raise DataError(str(exc)) from exc
    return _Data(files.source, list(files.class_names), channels, int(min(first.shape[:2])), files=files)


def _init_weights(cfg: TrainConfig) -> ForeignWeights | None:
    if not cfg.init:
        return None
    return read_weights(cfg.init, num_heads=cfg.init_num_heads, arch=cfg.init_arch)


def _fit_folder(files: list[tuple[Path, int]], size: int, channels: int) -> Preprocess:
    step = max(1, len(files) // FIT_SAMPLE)
    pre = Preprocess(size=size, channels=channels, mean=(0.0,) * channels, std=(1.0,) * channels)
    imgs = []
    for path, _ in files[::step][:FIT_SAMPLE]:
        try:
            imgs.append(pre.resize([read_image(path, channels)])[0])
        except InputError as exc:
            raise DataError(str(exc)) from exc
    return fit_preprocess(np.stack(imgs), size=size)


def _plan(cfg: TrainConfig, data: _Data, init: ForeignWeights | None) -> tuple[ViTConfig, Preprocess, list[str]]:
    """The model config and preprocessing of this run, and notes on what was adapted."""
    notes: list[str] = []
    num_classes = len(data.class_names)
    if init is not None:
        chans = init.config.in_chans
        if cfg.channels and cfg.channels != chans:
            raise EdgeVitError(f"--channels {cfg.channels}, but the initial weights take {chans}-channel images")
        size = cfg.img_size or init.config.img_size
        if size % init.config.patch_size:
            raise EdgeVitError(
                f"--img-size {size} is not a multiple of the weights' patch size {init.config.patch_size}"
            )
        model_cfg = init.config.replace(img_size=size, num_classes=num_classes)
        hints = init.preprocess
        if hints.get("mean") is not None and len(hints["mean"]) == chans:
            pre = Preprocess(
                size=size,
                channels=chans,
                mean=hints["mean"],
                std=hints["std"],
                resize_mode=hints.get("resize_mode", "squash"),
                crop_pct=hints.get("crop_pct", 1.0),
                interpolation=hints.get("interpolation", "area"),
            )
            return model_cfg, pre, notes
        notes.append("the initial weights carry no preprocessing: mean/std measured on the training images")
    else:
        chans = cfg.channels or data.channels
        size = cfg.img_size or default_img_size(cfg.preset, data.side)
        if cfg.img_size is None and size != data.side:
            notes.append(
                f"images are {data.side} px; training at {size} px (the {cfg.preset} default; --img-size to change)"
            )
        model_cfg = _scratch_config(cfg, size, chans, num_classes)
    if data.ds is not None:
        imgs = _in_memory(data.ds.train.images, size, chans)
        pre = fit_preprocess(imgs, size=size)
    else:
        assert data.files is not None
        pre = _fit_folder(data.files.splits["train"], size, chans)
    return model_cfg, pre, notes


def _in_memory(images: np.ndarray, size: int, channels: int, pre: Preprocess | None = None) -> np.ndarray:
    """In-memory images with ``channels`` channels, staged for ``pre`` (or squashed to ``size``)."""
    if images.shape[-1] != channels:
        if images.shape[-1] == 1:
            images = np.repeat(images, 3, axis=-1)
        else:
            import cv2

            images = np.stack([cv2.cvtColor(i, cv2.COLOR_RGB2GRAY)[:, :, None] for i in images])
    if pre is None:
        pre = Preprocess(size=size, channels=channels, mean=(0.0,) * channels, std=(1.0,) * channels)
    s = pre.stage_size
    if images.shape[1:3] == (s, s):
        return images
    return np.stack([pre.stage(i) for i in images])


def train(
    cfg: TrainConfig,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    dataset: Dataset | None = None,
    log: Callable[[str], None] | None = None,
    note: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train and write the checkpoint, metrics and curve to ``out_dir``. ``log`` gets a line
    per epoch, ``note`` (default: ``log``) what was adapted (image size, head, position
    embeddings)."""
    note = note or log
    out_dir = Path(out_dir)
    cfg = TrainConfig(**cfg.to_dict())  # checks every setting (a dataclass can be edited after init)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    init = _init_weights(cfg)
    data = _data(cfg, dataset)
    model_cfg, pre, notes = _plan(cfg, data, init)
    if model_cfg.img_size > MAX_TRAIN_IMG_SIZE:
        raise EdgeVitError(f"input size {model_cfg.img_size} px is larger than {MAX_TRAIN_IMG_SIZE}; pass --img-size")
    for text in notes:
        if note:
            note(text)

    ds: Dataset | None = None
    loaders: dict[str, Any] = {}
    samplers: dict[str, EpochSampler] = {}
    if data.ds is not None:
        src = data.ds
        ds = Dataset(
            src.source,
            src.class_names,
            *(
                Split(_in_memory(s.images, model_cfg.img_size, model_cfg.in_chans, pre), s.labels)
                for s in (src.train, src.val, src.test)
            ),
        )
        n_train, n_val = len(ds.train), len(ds.val)
    else:
        assert data.files is not None
        files = data.files.splits
        n_train, n_val = len(files["train"]), len(files["val"])
        workers = _workers(cfg, n_train)
        for name, is_train in (("train", True), ("val", False), ("test", False)):
            samplers[name] = EpochSampler(len(files[name]), cfg.seed, shuffle=is_train)
            images = FolderImages(files[name], pre, is_train and cfg.augment, cfg.crop_scale, cfg.hflip, cfg.seed)
            bs = cfg.batch_size if is_train else max(cfg.batch_size, 128)
            loaders[name] = _loader(images, bs, workers if name != "test" else 0, samplers[name])
    if n_train < 2 or n_val < 1:
        raise DataError(f"{data.source}: need at least 2 training and 1 validation image")

    torch.manual_seed(cfg.seed)
    model = VisionTransformer(model_cfg)
    if init is not None:
        sd, done = adapt_state_dict(init.state_dict, init.config, model_cfg)
        result = model.load_state_dict(sd, strict=False)
        heads = ("head.", "head_dist.")
        if result.unexpected_keys or any(not k.startswith(heads) for k in result.missing_keys):
            raise ArtifactError(
                f"the initial weights do not fit the model (missing {result.missing_keys[:3]}, "
                f"unexpected {result.unexpected_keys[:3]})"
            )
        notes.extend(done)
        if note:
            for d in done:
                note(d)
    if cfg.freeze_backbone:
        for p in model.backbone_parameters():
            p.requires_grad_(False)
    opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.999))
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)
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
        if not all(k in last for k in ("optimizer", "scheduler", "history", "best", "best_model")):
            raise ArtifactError(
                f"cannot resume: {last_path} is not a resumable last.pt (it has no optimizer state: a checkpoint.pt "
                "copied over it?); train without --resume, or fine-tune from it with --init"
            )
        if (
            last.get("train_config", {}).get("seed") != cfg.seed
            or ViTConfig.from_dict(last["model_config"]) != model_cfg
        ):
            raise ArtifactError(f"{last_path} was made with another model or seed; resume with the same settings")
        done_epochs = int(last["epoch"]) + 1
        if done_epochs >= cfg.epochs:
            raise ArtifactError(
                f"cannot resume: {last_path} already has {done_epochs} epochs and --epochs is {cfg.epochs}; "
                f"pass --epochs larger than {done_epochs} to train on, or start a new run with "
                f"--init {out_dir / 'checkpoint.pt'} to fine-tune"
            )
        model.load_state_dict(last["model"])
        opt.load_state_dict(last["optimizer"])
        sched.load_state_dict(last["scheduler"])
        history = list(last["history"])
        best = dict(last["best"])
        best_state = last["best_model"]
        start_epoch = done_epochs

    def ckpt_payload(state: dict[str, torch.Tensor], metrics: dict[str, Any], epoch: int) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "model": state,
            "model_config": model_cfg.to_dict(),
            "preprocess": pre.to_dict(),
            "class_names": list(data.class_names),
            "data": data.source,
            "train_config": cfg.to_dict(),
            "metrics": metrics,
            "epoch": epoch,
        }

    def run_eval(split: str) -> tuple[float, float]:
        if ds is not None:
            return evaluate(model, ds.split(split), pre)
        return evaluate_loader(model, loaders[split])

    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    prior_time = history[-1]["time_s"] if history else 0.0
    # one bar over every image of the run: tqdm shows images/s and the time left
    bar = tqdm(total=(cfg.epochs - start_epoch) * n_train, desc="train", unit="img", disable=not progress, leave=False)
    for epoch in range(start_epoch, cfg.epochs):
        rng = np.random.default_rng([cfg.seed, epoch])
        torch.manual_seed(cfg.seed * 100_003 + epoch)
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        if ds is not None:
            perm = rng.permutation(len(ds.train))

            def batches(
                perm: np.ndarray = perm, rng: np.random.Generator = rng
            ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
                for start in range(0, len(perm), cfg.batch_size):
                    idx = perm[start : start + cfg.batch_size]
                    imgs = ds.train.images[idx]
                    if cfg.augment:
                        imgs = augment_batch(imgs, rng, cfg.hflip)
                    yield torch.from_numpy(pre(imgs)), torch.from_numpy(ds.train.labels[idx])

            epoch_batches: Any = batches()
        else:
            samplers["train"].epoch = epoch
            epoch_batches = loaders["train"]
        for x, y in epoch_batches:
            logits = model(x)
            loss = loss_fn(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            bar.update(len(y))
        val_loss, val_acc = run_eval("val")
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
        bar.set_postfix(
            epoch=f"{epoch + 1}/{cfg.epochs}", loss=f"{row['train_loss']:.3f}", val=f"{val_acc:.3f}", refresh=False
        )
        if log:
            log(f"epoch {epoch + 1}/{cfg.epochs} loss {row['train_loss']:.4f} val_acc {val_acc:.4f}")
        last = ckpt_payload(model.state_dict(), {"history": history}, epoch)
        last.update(optimizer=opt.state_dict(), scheduler=sched.state_dict(), history=history, best=best)
        last["best_model"] = best_state
        _save_torch(last_path, last)
    bar.close()

    assert best_state is not None  # at least one epoch ran (checked above)
    model.load_state_dict(best_state)
    test_loss, test_acc = run_eval("test")
    metrics = {
        "best_epoch": best["epoch"],
        "val_acc": best["val_acc"],
        "val_loss": best["val_loss"],
        "test_acc": test_acc,
        "test_loss": test_loss,
        "epochs": cfg.epochs,
        "train_time_s": history[-1]["time_s"] if history else 0.0,
        "num_params": model.num_params(),
        "notes": notes,
        "history": history,
    }
    ckpt_path = out_dir / "checkpoint.pt"
    _save_torch(ckpt_path, ckpt_payload(best_state, metrics, best["epoch"]))
    write_json_atomic(out_dir / "metrics.json", metrics)
    title = f"{'fine-tuned' if init else cfg.preset} on {Path(data.source).name}"
    plot_history(history, out_dir / "training_curve.png", title=title)
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
