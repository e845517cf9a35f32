"""Cost of holding a mask during training, and training throughput, as ratios measured in one process.

    python benchmarks/training.py            # full run
    python benchmarks/training.py --quick    # a fast run (fewer repetitions, small models only)
    python benchmarks/training.py --devices cuda

(1) Mask overhead: time of a masked training step (forward, backward, gradient masking, SGD step with
momentum and weight decay, re-masking) over the time of the same dense step, on the same model, batch and
device; and the same for the mask held by ``mask.hold(model)`` (parametrizations: every forward computes
``where(keep, weight, 0)``, no call in the loop). Dense, masked and held steps are interleaved (each
going first in turn) and the median of many repetitions is reported, together with the median of the
per-pair ratios and the time of the two mask calls alone measured directly (least sensitive to other load
on the machine). Target: ≤ 1.05.

(2) Throughput of ``initprune.train.train`` in images/s (best of a few rounds) with batch 512: on the CPU
for the Fashion-MNIST preset's network (VGG-11 at width 0.25, 1×28×28), on CUDA when available for
CIFAR-shaped ResNet-18 (bf16 autocast and channels_last); dense and at 90% sparsity, and the ratio of
``train()`` to a bare loop of the same steps (the cost of its bookkeeping).

(3) On the CPU, ``train()`` with ``channels_last=true`` over the default (``auto``: off on the CPU), for
the study's CNNs (VGG-11 at width 0.25, ResNet-20) on 1×28×28 batches of 512, 90% sparse: the median of
interleaved pairs' ratios.

On a shared or busy machine, ``--threads 1`` avoids the stalls of oversubscribed thread pools.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import synchronize, vgg_small

from initprune import Mask
from initprune.models import create_model
from initprune.optim import MaskHolder
from initprune.train import TrainConfig, train


def random_mask(model: nn.Module, sparsity: float, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random keep-mask over every conv/linear weight except the last (the classifier)."""
    weights = [(n, p) for n, p in model.named_parameters() if p.ndim > 1]
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(p.shape, generator=g) >= sparsity for n, p in weights[:-1]}


def mask_overhead(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, reps: int, device: torch.device
) -> dict:
    """Median times of interleaved dense and masked SGD steps, and of the two mask calls alone."""
    runs = {}
    for kind in ("dense", "masked", "held"):
        m = copy.deepcopy(model).to(device)
        holder = MaskHolder(m, random_mask(m, 0.9)) if kind == "masked" else None
        if holder is not None:
            holder.apply()
        if kind == "held":
            Mask(random_mask(m, 0.9)).hold(m)
        opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        runs[kind] = (m, opt, holder)

    def step(kind: str) -> float:
        m, opt, holder = runs[kind]
        synchronize(device)
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(m(x), y).backward()
        if holder is not None:
            holder.mask_grads()
        opt.step()
        if holder is not None:
            holder.after_step()
        synchronize(device)
        return time.perf_counter() - start

    kinds = ("dense", "masked", "held")
    for _ in range(3):  # warm up allocators, kernels and momentum buffers
        for kind in kinds:
            step(kind)
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    for i in range(reps):
        order = kinds[i % 3 :] + kinds[: i % 3]  # each kind goes first in turn
        for kind in order:
            times[kind].append(step(kind))
    holder = runs["masked"][2]
    mask_only = []
    for _ in range(reps):
        synchronize(device)
        start = time.perf_counter()
        holder.mask_grads()
        holder.after_step()
        synchronize(device)
        mask_only.append(time.perf_counter() - start)
    dense, masked = statistics.median(times["dense"]), statistics.median(times["masked"])
    pair = statistics.median(m / d for m, d in zip(times["masked"], times["dense"], strict=True))
    held = statistics.median(times["held"])
    held_pair = statistics.median(h / d for h, d in zip(times["held"], times["dense"], strict=True))
    return {
        "held_ms": held * 1e3,
        "held_ratio": held / dense,
        "held_pair_ratio": held_pair,
        "dense_ms": dense * 1e3,
        "masked_ms": masked * 1e3,
        "ratio": masked / dense,
        "pair_ratio": pair,
        "mask_ops_ms": statistics.median(mask_only) * 1e3,
        "direct_ratio": 1 + statistics.median(mask_only) / dense,
        "masked_tensors": len(holder),
    }


class DeviceLoader:
    """Synthetic batches already on the device (what a fast tensor loader yields)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batches: int):
        self.x, self.y, self.batches = x, y, batches

    def __len__(self) -> int:
        return self.batches

    def __iter__(self):
        for _ in range(self.batches):
            yield self.x, self.y

    def set_epoch(self, epoch: int) -> None:
        pass


def throughput_model(device: torch.device) -> tuple[str, nn.Module, tuple[int, ...]]:
    """CPU: the Fashion-MNIST preset's network; CUDA: CIFAR-shaped ResNet-18."""
    torch.manual_seed(0)
    if device.type == "cpu":
        model = create_model("vgg11", num_classes=10, in_channels=1, width=0.25)
        return "vgg11 (width 0.25), the Fashion-MNIST preset", model, (1, 28, 28)
    return "resnet18 (CIFAR)", create_model("resnet18", num_classes=10, in_channels=3), (3, 32, 32)


def throughput(steps: int, batch: int, device: torch.device, rounds: int = 3) -> dict:
    """Images/s of train() for the device's network, dense and 90% sparse, and of a bare loop of the
    same steps.

    The three are measured in turn, ``rounds`` times, and the best round of each is kept (the least
    disturbed by other load on the machine).
    """
    g = torch.Generator().manual_seed(0)
    _, base, shape = throughput_model(device)
    x = torch.randn(batch, *shape, generator=g).to(device)
    y = torch.randint(10, (batch,), generator=g).to(device)
    loader = DeviceLoader(x, y, steps)
    config = TrainConfig(epochs=1, lr=0.03, schedule="constant")
    use_cuda = device.type == "cuda"

    def run_train(mask: bool) -> float:
        model = copy.deepcopy(base)
        held = random_mask(model, 0.9) if mask else None
        history = train(model, loader, config, mask=held, device=device, progress=False)["history"]
        return steps * batch / history[-1]["seconds"]

    def run_bare() -> float:
        """The same SGD steps with none of train()'s bookkeeping."""
        model = copy.deepcopy(base).to(device)
        if use_cuda:
            model = model.to(memory_format=torch.channels_last)
        xb = x.contiguous(memory_format=torch.channels_last) if use_cuda else x
        opt = torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9, weight_decay=5e-4)
        synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_cuda):
                out = model(xb)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(out.float(), y).backward()
            opt.step()
        synchronize(device)
        return steps * batch / (time.perf_counter() - start)

    train(copy.deepcopy(base), DeviceLoader(x, y, 3), config, device=device, progress=False)  # warm up
    runs = {
        "bare_dense": run_bare,
        "train_dense": lambda: run_train(False),
        "train_masked": lambda: run_train(True),
    }
    best = dict.fromkeys(runs, 0.0)
    for _ in range(rounds):
        for name, fn in runs.items():
            best[name] = max(best[name], fn())
    return best


def channels_last_cpu(steps: int, batch: int, rounds: int) -> dict[str, dict[str, float]]:
    """Images/s of ``train()`` on the CPU with ``channels_last=True`` against ``False`` (the default
    ``auto`` there), 90% sparse mask held, for the study's CNNs: VGG-11 at width 0.25 and ResNet-20 on
    1×28×28 inputs. The two formats alternate (each going first in turn) for ``rounds`` pairs; the median
    of the per-pair ratios is reported with both medians."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, 28, 28, generator=g)
    y = torch.randint(10, (batch,), generator=g)
    loader = DeviceLoader(x, y, steps)
    out = {}
    for name, options in (("vgg11 (width 0.25)", {"width": 0.25}), ("resnet20", {})):
        torch.manual_seed(0)
        base = create_model(name.split()[0], num_classes=10, in_channels=1, **options)
        mask = random_mask(base, 0.9)

        def run(last: bool, base: nn.Module = base, mask: dict = mask) -> float:
            config = TrainConfig(epochs=1, lr=0.03, schedule="constant", channels_last=last)
            history = train(copy.deepcopy(base), loader, config, mask=mask, device=torch.device("cpu"),
                            progress=False)["history"]  # fmt: skip
            return steps * batch / history[-1]["seconds"]

        run(True)  # warm up both kernels' caches
        run(False)
        pairs = []
        for i in range(rounds):
            if i % 2:
                last, contiguous = run(True), run(False)
            else:
                contiguous, last = run(False), run(True)
            pairs.append((contiguous, last))
        out[name] = {
            "contiguous": statistics.median(c for c, _ in pairs),
            "channels_last": statistics.median(cl for _, cl in pairs),
            "ratio": statistics.median(cl / c for c, cl in pairs),
        }
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, small models only")
    parser.add_argument("--reps", type=int, default=None, help="interleaved repetitions per model")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--devices",
        nargs="+",
        choices=("cpu", "cuda"),
        default=["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"],
        help="devices to measure (default: cpu, and cuda when available)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    reps = args.reps or (15 if args.quick else 60)
    devices = [torch.device(name) for name in args.devices]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, load average {load:.1f}")

    for device in devices:
        batch = 64 if device.type == "cpu" else 256
        print(
            f"\n(1) cost of holding the mask on {device.type}: masked step / dense step, "
            f"batch {batch}×3×32×32"
        )
        torch.manual_seed(0)
        models = {"vgg_small": vgg_small(), "resnet20": create_model("resnet20", num_classes=10)}
        if not args.quick or device.type == "cuda":
            models["vgg11"] = create_model("vgg11", num_classes=10)
        x = torch.randn(batch, 3, 32, 32).to(device)
        y = torch.randint(10, (batch,)).to(device)
        header = (
            "model",
            "dense ms",
            "masked ms",
            "ratio",
            "pair ratio",
            "mask ops ms",
            "1+ops/dense",
            "tensors",
            "held ms",
            "held ratio",
            "held pair",
        )
        print("  {:<10} {:>9} {:>10} {:>7} {:>10} {:>11} {:>11} {:>7} {:>8} {:>10} {:>9}".format(*header))
        for name, model in models.items():
            n = reps if name != "vgg11" or device.type == "cuda" else max(5, reps // 4)
            r = mask_overhead(model, x, y, n, device)
            print(
                f"  {name:<10} {r['dense_ms']:9.2f} {r['masked_ms']:10.2f} {r['ratio']:7.3f} "
                f"{r['pair_ratio']:10.3f} {r['mask_ops_ms']:11.3f} {r['direct_ratio']:11.4f} "
                f"{r['masked_tensors']:7d} {r['held_ms']:8.2f} {r['held_ratio']:10.3f} "
                f"{r['held_pair_ratio']:9.3f}"
            )

        steps = 8 if args.quick else 30
        steps = steps if device.type == "cpu" else steps * 10
        label = "fp32" if device.type == "cpu" else "bf16 autocast + channels_last"
        print(
            f"\n(2) train() throughput on {device.type} ({label}): {throughput_model(device)[0]}, "
            f"batch 512, {steps} steps"
        )
        t = throughput(steps, 512, device, rounds=2 if args.quick else 3)
        print(f"  bare loop (dense)        {t['bare_dense']:10.0f} images/s")
        print(
            f"  train() dense            {t['train_dense']:10.0f} images/s  ratio to bare loop "
            f"{t['train_dense'] / t['bare_dense']:.3f}"
        )
        print(
            f"  train() 90% sparse mask  {t['train_masked']:10.0f} images/s  ratio to dense train() "
            f"{t['train_masked'] / t['train_dense']:.3f}"
        )
        if device.type == "cpu":
            steps3, rounds3 = (4, 3) if args.quick else (10, 7)
            print(
                f"\n(3) channels_last on the CPU: train() images/s with channels_last=true over false "
                f"(the CPU's default), 90% sparse, batch 512×1×28×28, {steps3} steps, {rounds3} pairs"
            )
            for name, r in channels_last_cpu(steps3, 512, rounds3).items():
                print(
                    f"  {name:<20} contiguous {r['contiguous']:8.0f}  channels_last "
                    f"{r['channels_last']:8.0f} images/s  ratio {r['ratio']:.3f}"
                )


if __name__ == "__main__":
    main()
