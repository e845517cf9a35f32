"""What exact per-sample gradients cost where the model overwrites layer outputs in place, in one process.

    python benchmarks/inplace.py [--threads N] [--repeats 7] [--device cpu|cuda] [--width 16]

torchvision's VGG-11 layout at width w (a ReLU(inplace=True) after every convolution and hidden Linear),
100 CIFAR-shaped samples, 10 classes, eval mode. The hook route of the per-sample engine takes each
layer's output gradient at the autograd node that made the output, which the in-place ReLU does not
replace (``initprune/curvature/per_sample.py``). Printed, as medians of paired ratios (each pair timed
back to back):

* FD in place / FD out of place: the empirical Fisher diagonal of the in-place network against the same
  network with ``ReLU(inplace=False)`` (same weights, same numbers): what exactness under in-place
  operations costs;
* FD in place / gradient: against one batched gradient of the mean loss of the in-place network.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(__file__))

from common import paired_ratio

from initprune.curvature import batch_gradient, per_sample_gradient_moments
from initprune.prunable import prunable_parameters


def vgg11(width: int, inplace: bool) -> nn.Module:
    layers: list[nn.Module] = []
    cin = 3
    for v in (width, "M", 2 * width, "M", 4 * width, 4 * width, "M", 8 * width, 8 * width, "M"):
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(cin, int(v), 3, padding=1), nn.ReLU(inplace=inplace)]
            cin = int(v)
    return nn.Sequential(
        *layers,
        nn.Flatten(),
        nn.Linear(cin * 4, 16 * width),
        nn.ReLU(inplace=inplace),
        nn.Linear(16 * width, 10),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--width", type=int, default=16)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    models = {}
    for inplace in (True, False):
        torch.manual_seed(0)
        models[inplace] = vgg11(args.width, inplace).to(device).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(100, 3, 32, 32, generator=g).to(device)
    y = torch.arange(10).repeat_interleave(10).to(device)
    batches = [(x, y)]
    params = {inplace: prunable_parameters(m) for inplace, m in models.items()}
    for p in (*params[True].values(), *params[False].values()):
        p.requires_grad_(True)

    def fisher(inplace: bool):
        return lambda: per_sample_gradient_moments(models[inplace], params[inplace], batches, gradient=False)

    a, b = fisher(True)(), fisher(False)()
    worst = max(float((a[1][k] - b[1][k]).abs().max() / b[1][k].abs().max()) for k in b[1])
    print(f"VGG-11 width {args.width}, 100 samples, {device}, {torch.get_num_threads()} threads")
    print(f"FD in place vs out of place: largest relative difference {worst:.1e}")
    ratio = paired_ratio(fisher(True), fisher(False), device, args.repeats)
    print(f"FD in place / FD out of place: {ratio:.3f}")
    gradient = lambda: batch_gradient(models[True], params[True], batches)  # noqa: E731
    print(f"FD in place / gradient: {paired_ratio(fisher(True), gradient, device, args.repeats):.2f}")
    print(f"FD out of place / gradient: {paired_ratio(fisher(False), gradient, device, args.repeats):.2f}")


if __name__ == "__main__":
    main()
