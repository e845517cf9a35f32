"""``python -m initprune``: the ``initprune`` command, also as the module ``torchrun -m initprune`` starts."""

from __future__ import annotations

import sys

import torch.distributed as dist

from .cli import main


def _main() -> int:
    try:
        return main()
    finally:
        if dist.is_available() and dist.is_initialized():  # joined by a run under torchrun
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(_main())
