"""Training and evaluation of a (pruned) network with its mask held fixed.

The loop is built for speed on any device: the device is picked once, losses and correct counts accumulate
as device tensors and are read once per epoch (or every ``log_every`` steps for the progress bar), and the
mask is held by :class:`~initprune.optim.MaskHolder` with fused in-place multiplies. The learning rate is
updated per optimizer step (see :mod:`initprune.optim`), so fractional epochs and warmup work exactly.

Weight decay applies to every parameter by default (the paper's setting); ``no_decay_norm_bias`` exempts
biases and normalization parameters (usual for ViT).

Checkpoints: at every epoch end ``checkpoint_dir/checkpoint.pt`` is written atomically with the model,
optimizer and scheduler states, the epoch, step and history, and the random states (torch CPU and CUDA,
Python, NumPy, and the loader's generator if it has one). A run started with a checkpoint present resumes
from it and ends with exactly the weights and metrics of an uninterrupted run (apart from ``seconds``).
"""

from __future__ import annotations

import logging
import math
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from .checkpoint import (
    CHECKPOINT_NAME,
    read_checkpoint,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from .curvature.losses import CrossEntropy, Loss, get_loss
from .distributed import from_main, is_distributed, is_main, world_size
from .errors import InitpruneError
from .optim import MaskHolder, epoch_steps, make_optimizer, make_scheduler
from .train_config import TrainConfig, _auto_flag

__all__ = ["MaskHolder", "TrainConfig", "evaluate", "train"]

logger = logging.getLogger(__name__)


def _device_of(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    return torch.device("cpu")


def _use(flag: bool | str, name: str, device: torch.device) -> bool:
    """Resolve an auto/true/false flag that only takes effect on CUDA."""
    flag = _auto_flag(name, flag)
    if flag == "auto":
        return device.type == "cuda"
    if flag and device.type != "cuda":
        warnings.warn(f"{name}=True has no effect on {device.type}; training in float32", stacklevel=3)
        return False
    return bool(flag)


def _autocast(enabled: bool) -> Any:
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16) if enabled else nullcontext()


def _unpack(batch: Any) -> tuple[Tensor, Tensor]:
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise InitpruneError(f"a loader must yield (inputs, targets) batches, got a {type(batch).__name__}")


def _to_device(batch: Any, device: torch.device, channels_last: bool) -> tuple[Tensor, Tensor]:
    x, y = _unpack(batch)
    x = x.to(device, non_blocking=True)
    if channels_last and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device, non_blocking=True)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    device: torch.device | str | None = None,
    topk: Sequence[int] = (1, 5),
    amp: bool | str = "auto",
    loss: str = "cross_entropy",
) -> dict[str, float]:
    """Mean cross-entropy ``loss`` (no label smoothing), top-1 ``accuracy`` and ``top{k}_accuracy``.

    ``loss="token_cross_entropy"``: every counted token (target not −100) is one prediction, so ``loss`` is
    the mean cross-entropy per token over the split (nats), ``accuracy`` next-token accuracy, ``count``
    the tokens; also ``perplexity`` = exp(loss) and ``bits_per_byte`` = loss / ln 2 (a token is a byte).

    Top-k accuracy is reported for every k > 1 of ``topk`` below the number of classes (for k at or above
    it every sample counts as correct). Top-1 uses ``argmax`` (the first maximum on ties). ``device``
    defaults to the model's; ``amp`` as in :class:`TrainConfig`. Also returns ``count``, the samples seen.
    The model is evaluated in eval mode and its train/eval mode is restored.
    """
    ks = sorted({int(k) for k in topk} - {1})
    if any(k < 1 for k in ks):
        raise InitpruneError(f"topk values must be positive integers, got {tuple(topk)!r}")
    device = _device_of(model) if device is None else torch.device(device)
    use_amp = _use(amp, "amp", device)
    kind = get_loss(loss)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros(1 + len(ks), dtype=torch.int64, device=device)
    count, classes = 0, 0
    try:
        for batch in loader:
            x, y = _to_device(batch, device, False)
            with _autocast(use_amp):
                logits = model(x)
            logits, y = kind.predictions(logits.float(), y)
            classes = logits.shape[-1]
            loss_sum += F.cross_entropy(logits, y, reduction="sum")
            hits = [(logits.argmax(-1) == y).sum()]
            if ks and ks[0] < classes:
                top = logits.topk(min(ks[-1], classes), dim=-1).indices == y[:, None]
                hits += [top[:, :k].any(-1).sum() if k < classes else correct.new_tensor(0) for k in ks]
            correct[: len(hits)] += torch.stack(hits)
            count += y.shape[0]
    finally:
        model.train(was_training)
    sums = torch.cat([loss_sum.view(1), correct.double()])
    if _sharded(loader):  # each rank saw its part of the samples: sum the counts over the ranks
        sums = torch.cat([sums, sums.new_tensor([count])])
        torch.distributed.all_reduce(sums)
        sums, count = sums[:-1], int(sums[-1])
    if count == 0:
        raise InitpruneError("the evaluation loader yielded no batch")
    loss_total, *totals = sums.tolist()  # the one sync
    result = {"loss": loss_total / count, "accuracy": totals[0] / count}
    result.update({f"top{k}_accuracy": totals[i + 1] / count for i, k in enumerate(ks) if k < classes})
    result["count"] = count
    if kind.name == "token_cross_entropy":
        result["perplexity"] = math.exp(min(result["loss"], 700.0))
        result["bits_per_byte"] = result["loss"] / math.log(2)
    return result


# ---------------------------------------------------------------- the loop


def _sharded(loader: Any) -> bool:
    """Whether ``loader`` yields this rank's part of every batch (:meth:`EpochLoader.shard`) under a
    process group, so that sums over its samples are to be taken over the ranks."""
    return is_distributed() and getattr(loader, "world_size", 1) > 1


def _objective(objective: Loss, logits: Tensor, y: Tensor, label_smoothing: float, reduction: str) -> Tensor:
    """The training loss of a batch: cross-entropy as ``F.cross_entropy`` computes it, or the mean (sum)
    over sequences of the per-sequence token loss."""
    if isinstance(objective, CrossEntropy):
        return F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing, reduction=reduction)
    values = objective.per_sample(logits.float(), y, label_smoothing=label_smoothing)
    return values.sum() if reduction == "sum" else values.mean()


def _train_epoch(
    model: nn.Module,
    loader: Iterable[Any],
    steps: int,
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    holder: MaskHolder | None,
    config: TrainConfig,
    device: torch.device,
    use_amp: bool,
    channels_last: bool,
    bar: Any,
) -> dict[str, Any]:
    """Run up to ``steps`` optimizer steps over one pass of ``loader``; metrics read once at the end."""
    model.train()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    loss_sum = torch.zeros((), dtype=torch.float32, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    predicted = torch.zeros((), dtype=torch.int64, device=device)  # predictions scored: samples or tokens
    count = done = 0
    objective = get_loss(config.loss)
    lr = optimizer.param_groups[0]["lr"]
    sharded = _sharded(loader)
    for batch in loader:
        x, y = _to_device(batch, device, channels_last)
        with _autocast(use_amp):
            logits = model(x)
        if sharded:
            # Σ_local ℓ_i · w / B: DistributedDataParallel averages over the w ranks, which makes the
            # gradient the mean over the B samples of the global batch even when the parts differ in size.
            weight = world_size() / loader.global_batch_size(done)  # type: ignore[attr-defined]
            loss = _objective(objective, logits, y, config.label_smoothing, "sum").mul(weight)
        else:
            loss = _objective(objective, logits, y, config.label_smoothing, "mean")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if holder is not None:
            holder.mask_grads()
        if config.grad_clip is not None:
            nn.utils.clip_grad_norm_(params, config.grad_clip)
        lr = optimizer.param_groups[0]["lr"]  # a Python float: no sync
        optimizer.step()
        if holder is not None:
            holder.after_step()
        scheduler.step()
        n = y.shape[0]
        loss_sum += loss.detach() / weight if sharded else loss.detach() * n
        scored, labels = objective.predictions(logits.detach(), y)
        correct += (scored.argmax(-1) == labels).sum()
        predicted += labels.numel()
        count += n
        done += 1
        bar.update(1)
        if config.log_every and not bar.disable and done % config.log_every == 0:
            bar.set_postfix(loss=f"{float(loss_sum) / count:.4f}", refresh=False)
        if done >= steps:
            break
    totals = torch.stack(
        [loss_sum.double(), correct.double(), correct.new_tensor(count).double(), predicted.double()]
    )
    if sharded:
        torch.distributed.all_reduce(totals)
    loss_total, correct_total, count, predicted_total = totals.tolist()  # the one sync
    if count == 0:
        raise InitpruneError("the training loader yielded no batch")
    return {
        "steps": done,
        "train_loss": loss_total / count,
        "train_accuracy": correct_total / max(predicted_total, 1.0),
        "lr": lr,
    }


def train(
    model: nn.Module,
    train_loader: Iterable[Any],
    config: TrainConfig | None = None,
    *,
    mask: Mapping[str, Tensor] | None = None,
    val_loader: Iterable[Any] | None = None,
    checkpoint_dir: str | Path | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    on_resume: Callable[[int, int], None] | None = None,
    sync_batchnorm: bool = False,
    test_loader: Iterable[Any] | None = None,
    settings_hash: str | None = None,
) -> dict[str, Any]:
    """Train ``model`` in place on ``train_loader`` with ``mask`` (name → bool keep-tensor) held fixed.

    ``train_loader``: any re-iterable of ``(inputs, targets)`` batches with ``len()``; its ``set_epoch(e)``
    is called before every epoch if it has one. The run lasts ``round(config.epochs * len(train_loader))``
    optimizer steps; a fractional last epoch stops early. ``device`` defaults to CUDA when available, else
    the CPU; the model is moved there. With ``checkpoint_dir``, a checkpoint is written after every epoch
    (after validation, before ``on_epoch_end``) and an existing one is resumed; a finished run returns its
    stored history. ``on_epoch_end(record)`` receives each epoch's history record; ``on_resume(done,
    total)`` is called when a checkpoint is resumed, with its finished epochs and the epochs of the run.
    The global torch, Python and NumPy generators are seeded with ``config.seed`` at the start (and
    restored on resume).

    Returns ``{"history": [record, ...], "steps", "epochs", "resumed_from_epoch", "final",
    "lr_warmup_steps"}`` (the steps of linear learning-rate warmup, from ``warmup_epochs`` or
    ``warmup_steps``); a record has
    ``epoch`` (1-based), ``step`` (global steps so far), ``train_loss`` (label-smoothed objective),
    ``train_accuracy``, ``val_loss``, ``val_accuracy`` (and ``val_top5_accuracy``; None without
    ``val_loader``), ``lr`` (the rate of the epoch's last step) and ``seconds``; with
    ``config.loss="token_cross_entropy"`` also ``val_perplexity`` and ``val_bits_per_byte`` (losses and
    accuracies per token there, see :func:`evaluate`).

    Under a process group (``torchrun``) the model is wrapped in DistributedDataParallel: give each rank
    its shard of the loaders (:meth:`~initprune.data.loader.EpochLoader.shard`) and the steps, losses and
    metrics are those of one process on the global batches. Only rank 0 writes the checkpoint, and every
    rank resumes from rank 0's. ``sync_batchnorm`` (CUDA only) normalizes with the statistics of the
    global batch (SyncBatchNorm); without it each rank's BatchNorm layers use the statistics of that
    rank's part of the batch, and the running statistics are rank 0's.
    With ``test_loader`` a record also has ``test_loss``, ``test_accuracy`` and ``test_top5_accuracy``
    of every epoch: only for reproducing a protocol that selects an epoch on the test set (the paper's
    reference code), never for choosing anything in a sound experiment.
    ``settings_hash`` names the run the checkpoints belong to: it is written into them, and a checkpoint
    carrying another one is refused.
    """
    config = TrainConfig() if config is None else config
    if not isinstance(config, TrainConfig):
        raise InitpruneError(f"config must be a TrainConfig, got a {type(config).__name__}")
    steps_per_epoch = len(train_loader)  # type: ignore[arg-type]
    if steps_per_epoch == 0:
        raise InitpruneError("the training loader is empty (len 0)")
    total_steps = epoch_steps(config.epochs, steps_per_epoch)
    num_epochs = math.ceil(total_steps / steps_per_epoch)
    if device is None:
        device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(device)
    use_amp = _use(config.amp, "amp", device)
    # channels_last also works on the CPU when asked for; "auto" turns it on for CUDA only.
    channels_last = device.type == "cuda" if config.channels_last == "auto" else bool(config.channels_last)

    seed_everything(config.seed)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    net = _distributed(model, device, sync_batchnorm)
    holder = MaskHolder(model, mask) if mask is not None else None
    if holder is not None:
        holder.apply()
    if config.warmup_steps > total_steps:
        raise InitpruneError(
            f"warmup_steps must be at most the {total_steps} steps of the training, got {config.warmup_steps}"
        )
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, steps_per_epoch, total_steps)

    history: list[dict[str, Any]] = []
    start_epoch, step, resumed = 0, 0, None
    path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    # rank 0 reads the checkpoint; every rank gets it
    state = from_main(_read_if_present, path, config, steps_per_epoch, settings_hash)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch = resumed = state["epoch"]
        step, history = state["step"], list(state["history"])
        set_rng_state(state["rng"], train_loader)
        if holder is not None:
            holder.apply()
        logger.info("resuming from %s at epoch %d of %d", path, start_epoch, num_epochs)
        if on_resume is not None:
            on_resume(start_epoch, num_epochs)

    show = progress and sys.stderr.isatty() and is_main()  # one bar under torchrun
    for epoch in range(start_epoch, num_epochs):
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        start = time.perf_counter()
        steps = min(steps_per_epoch, total_steps - step)
        with tqdm(total=steps, desc=f"epoch {epoch + 1}/{num_epochs}", disable=not show, leave=False) as bar:
            metrics = _train_epoch(
                net,
                train_loader,
                steps,
                optimizer=optimizer,
                scheduler=scheduler,
                holder=holder,
                config=config,
                device=device,
                use_amp=use_amp,
                channels_last=channels_last,
                bar=bar,
            )
        step += metrics.pop("steps")
        record: dict[str, Any] = {"epoch": epoch + 1, "step": step, **metrics}
        val = (
            evaluate(model, val_loader, device=device, amp=use_amp, loss=config.loss)
            if val_loader is not None
            else {}
        )
        record["val_loss"] = val.get("loss")
        record["val_accuracy"] = val.get("accuracy")
        record["val_top5_accuracy"] = val.get("top5_accuracy")
        if config.loss == "token_cross_entropy":
            record["val_perplexity"] = val.get("perplexity")
            record["val_bits_per_byte"] = val.get("bits_per_byte")
        if test_loader is not None:
            test = evaluate(model, test_loader, device=device, amp=use_amp, loss=config.loss)
            record.update({f"test_{k}": test.get(k) for k in ("loss", "accuracy", "top5_accuracy")})
        record["seconds"] = time.perf_counter() - start
        history.append(record)
        logger.info(
            "epoch %d/%d: " + ", ".join(f"{k} %s" for k in record if k not in ("epoch",)),
            epoch + 1,
            num_epochs,
            *(record[k] for k in record if k != "epoch"),
        )
        if path is not None and is_main():
            save_checkpoint(
                path,
                model,
                optimizer,
                scheduler,
                config,
                epoch + 1,
                step,
                steps_per_epoch,
                history,
                train_loader,
                settings_hash=settings_hash,
            )
        if on_epoch_end is not None:
            on_epoch_end(dict(record))
    return {
        "history": history,
        "steps": step,
        "epochs": num_epochs,
        "resumed_from_epoch": resumed,
        "final": history[-1] if history else None,
        "lr_warmup_steps": scheduler.lr_lambdas[0].warmup_steps,  # type: ignore[attr-defined]
    }


def _read_if_present(
    path: Path | None, config: TrainConfig, steps_per_epoch: int, settings_hash: str | None
) -> dict[str, Any] | None:
    if path is None or not path.exists():
        return None
    return read_checkpoint(path, config, steps_per_epoch, settings_hash)


def _distributed(model: nn.Module, device: torch.device, sync_batchnorm: bool) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel under a process group (with SyncBatchNorm layers if
    asked for), else ``model`` itself."""
    if not is_distributed():
        return model
    if sync_batchnorm:
        if device.type != "cuda":
            raise InitpruneError(f"sync_batchnorm needs CUDA devices, got {device.type}; set it to false")
        # Replaces the BatchNorm children in place; the parameters and buffers are the same tensors.
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)
