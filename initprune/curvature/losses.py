"""The losses the curvature engine scores with: ``cross_entropy``, ``token_cross_entropy``, or a callable.

A :class:`Loss` gives the per-sample losses ℓ_i of a batch of model outputs, always with the outputs
(logits) divided by the criterion's temperature T. Every estimator of :mod:`initprune.curvature` uses
mean reduction over the N samples, L = (1/N) Σ_i ℓ_i, whatever the loss.

The two built-ins are sums of softmax cross-entropies, which is what the exact GGN and the Monte-Carlo
Fisher need (:meth:`Loss.softmax_terms`):

* ``cross_entropy``: outputs (B, C), targets (B,); ℓ_i = CE(z_i/T, y_i).
* ``token_cross_entropy``: outputs (B, L, C), targets (B, L), tokens with target ``ignore_index``
  (default −100) not counted; one sample is one sequence and its loss the mean over its n_i counted tokens,
  ℓ_i = (1/n_i) Σ_{t counted} CE(z_it/T, y_it) (0 for a sequence without counted tokens).

A callable ``fn(outputs, targets) -> (B,)`` returning one loss per sample (each depending only on its own
sample's outputs) serves every criterion that needs only gradients and Hessian-vector products
(grad_norm, snip, grasp, fisher_*, hutch_*); it receives the outputs divided by T. The exact GGN and the
Monte-Carlo Fisher need the Hessian of the loss in the outputs in closed form, so they refuse it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InitpruneError, unknown_choice

LOSSES = ("cross_entropy", "token_cross_entropy")
"""The built-in losses, by name (``loss=`` of ``score``, ``prune`` and ``initprune run``)."""

IGNORE_INDEX = -100


class Loss:
    """A per-sample loss of model outputs and targets (see the module docstring)."""

    name: str = "loss"

    def per_sample(
        self, outputs: Tensor, targets: Tensor, temperature: float = 1.0, label_smoothing: float = 0.0
    ) -> Tensor:
        """ℓ_i of every sample of the batch, a (B,) tensor, with the outputs divided by ``temperature``
        (``label_smoothing``: the training objective's, built-in losses only)."""
        raise NotImplementedError

    def predictions(self, outputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """(logits (M, C), targets (M,)) of the M predictions of a batch that are scored: one per sample
        for classification, one per counted token for ``token_cross_entropy`` (for accuracy and per-token
        loss, perplexity and bits per byte in evaluation)."""
        return outputs, targets

    def total(self, outputs: Tensor, targets: Tensor, temperature: float = 1.0) -> Tensor:
        """Σ_i ℓ_i over the batch (the engines divide by the N of all batches)."""
        return self.per_sample(outputs, targets, temperature).sum()

    def softmax_terms(self, outputs: Tensor, targets: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
        """(p, w): ℓ_i = Σ_k w_ik CE(z_ik/T, y_ik) with p_ik = softmax(z_ik/T), p (B, K, C), w (B, K).

        The Hessian of ℓ_i in the outputs is then block-diagonal over k, w_ik (diag(p_ik) − p_ik p_ikᵀ)/T²:
        what the exact GGN and the Monte-Carlo Fisher are built on. Raises for a loss without this form.
        """
        raise InitpruneError(
            f"loss {self.name!r} has no closed-form output Hessian; the exact GGN and Monte-Carlo Fisher "
            f"criteria need one of the built-in losses ({', '.join(LOSSES)})"
        )

    @property
    def has_output_hessian(self) -> bool:
        """Whether :meth:`softmax_terms` is available (the exact GGN and MC Fisher need it)."""
        return False

    def check(self, outputs: Tensor, targets: Tensor, batch: int) -> None:
        """Raise :class:`InitpruneError` when ``targets`` of batch ``batch`` do not fit ``outputs``
        (the model's outputs on the batch's first sample; the targets of the whole batch). A callable
        loss is not checked here: it is the caller's."""

    def __repr__(self) -> str:
        return self.name


def _integer(targets: Tensor) -> bool:
    return not (targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool)


def _check_labels(targets: Tensor, classes: int, batch: int, ignore: int | None = None) -> None:
    bad = (targets < 0) | (targets >= classes)
    if ignore is not None:
        bad &= targets != ignore
    if bool(bad.any()):
        where = bad.nonzero()[0].tolist()
        token = f", token {where[1]}" if len(where) > 1 else ""
        skip = f" (or {ignore}, an ignored token)" if ignore is not None else ""
        raise InitpruneError(
            f"scoring data: batch {batch}, input {where[0]}{token} has label {int(targets[tuple(where)])}; "
            f"valid labels are 0 to {classes - 1}{skip} (the model returns {classes} logits)"
        )


class CrossEntropy(Loss):
    """ℓ_i = CE(z_i/T, y_i) for logits z_i (C,) and a class index y_i."""

    name = "cross_entropy"

    def per_sample(
        self, outputs: Tensor, targets: Tensor, temperature: float = 1.0, label_smoothing: float = 0.0
    ) -> Tensor:
        return F.cross_entropy(
            outputs / temperature, targets, reduction="none", label_smoothing=label_smoothing
        )

    def total(self, outputs: Tensor, targets: Tensor, temperature: float = 1.0) -> Tensor:
        return F.cross_entropy(outputs / temperature, targets, reduction="sum")

    def softmax_terms(self, outputs: Tensor, targets: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
        probs = torch.softmax(outputs / temperature, dim=-1).unsqueeze(1)
        return probs, probs.new_ones(probs.shape[:2])

    @property
    def has_output_hessian(self) -> bool:
        return True

    def check(self, outputs: Tensor, targets: Tensor, batch: int) -> None:
        if not _integer(targets) or targets.dim() != 1:
            raise InitpruneError(
                f"scoring data: batch {batch} has targets of dtype {targets.dtype} and shape "
                f"{tuple(targets.shape)}; targets must be a 1-D tensor of integer class indices (loss "
                "cross_entropy; token targets (batch, length) take loss token_cross_entropy)"
            )
        if not torch.is_tensor(outputs) or outputs.dim() != 2 or outputs.shape[0] != 1:
            shape = tuple(outputs.shape) if torch.is_tensor(outputs) else type(outputs).__name__
            raise InitpruneError(
                f"model must return logits of shape (batch, classes) for loss cross_entropy; on one sample "
                f"of batch {batch} it returned {shape} (per-token logits (batch, length, classes) take "
                "loss token_cross_entropy)"
            )
        _check_labels(targets, int(outputs.shape[-1]), batch)


@dataclass(frozen=True)
class TokenCrossEntropy(Loss):
    """ℓ_i = (1/n_i) Σ_{t: y_it ≠ ignore_index} CE(z_it/T, y_it): one sample is one sequence, its loss the
    mean over its n_i counted tokens (0 when n_i = 0). Outputs (B, L, C), targets (B, L)."""

    ignore_index: int = IGNORE_INDEX
    name: str = "token_cross_entropy"

    def counted(self, targets: Tensor) -> tuple[Tensor, Tensor]:
        """(mask of counted tokens (B, L), max(n_i, 1) per sample (B,) in the mask's float form)."""
        mask = targets != self.ignore_index
        return mask, mask.sum(-1).clamp(min=1)

    def per_sample(
        self, outputs: Tensor, targets: Tensor, temperature: float = 1.0, label_smoothing: float = 0.0
    ) -> Tensor:
        """``label_smoothing`` (training only) smooths every counted token's target as ``F.cross_entropy``."""
        logits = outputs / temperature
        tokens = F.cross_entropy(
            logits.flatten(0, -2),
            targets.flatten(),
            reduction="none",
            ignore_index=self.ignore_index,
            label_smoothing=label_smoothing,
        ).view(targets.shape)
        _, n = self.counted(targets)
        return tokens.sum(-1) / n.to(tokens.dtype)

    def predictions(self, outputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        keep = targets.flatten() != self.ignore_index
        return outputs.flatten(0, -2)[keep], targets.flatten()[keep]

    def softmax_terms(self, outputs: Tensor, targets: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
        probs = torch.softmax(outputs / temperature, dim=-1)
        mask, n = self.counted(targets)
        return probs, mask.to(probs.dtype) / n.to(probs.dtype).unsqueeze(-1)

    @property
    def has_output_hessian(self) -> bool:
        return True

    def check(self, outputs: Tensor, targets: Tensor, batch: int) -> None:
        if not _integer(targets) or targets.dim() != 2:
            raise InitpruneError(
                f"scoring data: batch {batch} has targets of dtype {targets.dtype} and shape "
                f"{tuple(targets.shape)}; loss token_cross_entropy needs integer token targets of shape "
                "(batch, length)"
            )
        if not torch.is_tensor(outputs) or outputs.dim() != 3 or outputs.shape[1] != targets.shape[1]:
            shape = tuple(outputs.shape) if torch.is_tensor(outputs) else type(outputs).__name__
            raise InitpruneError(
                f"loss token_cross_entropy needs logits of shape (batch, {targets.shape[1]}, classes) for "
                f"targets of shape {tuple(targets.shape)}; on one sample of batch {batch} the model "
                f"returned {shape}"
            )
        _check_labels(targets, int(outputs.shape[-1]), batch, self.ignore_index)


class CallableLoss(Loss):
    """A user's ``fn(outputs, targets) -> (B,)``, one loss per sample, given the outputs divided by T."""

    def __init__(self, fn: Callable[[Tensor, Tensor], Tensor]) -> None:
        self.fn = fn
        self.name = getattr(fn, "__name__", type(fn).__name__)

    def per_sample(
        self, outputs: Tensor, targets: Tensor, temperature: float = 1.0, label_smoothing: float = 0.0
    ) -> Tensor:
        if label_smoothing:
            raise InitpruneError(f"loss {self.name!r} (a callable) takes no label_smoothing")
        values = self.fn(outputs / temperature if temperature != 1.0 else outputs, targets)
        if not torch.is_tensor(values) or values.dim() != 1 or values.shape[0] != targets.shape[0]:
            shape = tuple(values.shape) if torch.is_tensor(values) else type(values).__name__
            raise InitpruneError(
                f"loss {self.name!r} must return one loss per sample, a tensor of shape "
                f"({targets.shape[0]},); it returned {shape}"
            )
        return values


def get_loss(loss: str | Loss | Callable[[Tensor, Tensor], Tensor] | None) -> Loss:
    """The :class:`Loss` for ``loss``: a built-in name (:data:`LOSSES`; None is ``cross_entropy``), a
    :class:`Loss` (``TokenCrossEntropy(ignore_index=0)``, say), or a callable returning per-sample losses."""
    if loss is None or loss == "cross_entropy":
        return CrossEntropy()
    if loss == "token_cross_entropy":
        return TokenCrossEntropy()
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str):
        raise unknown_choice("loss", loss, LOSSES)
    if callable(loss):
        return CallableLoss(loss)
    raise InitpruneError(f"loss must be one of {', '.join(LOSSES)} or a callable, got {loss!r}")


def loss_name(loss: str | Loss | Callable | None) -> str:
    """The name a result records for ``loss``."""
    return get_loss(loss).name
