"""Which parameters are prunable: chosen by module type, never by name substrings.

By default the ``weight`` of every convolution (``Conv1d/2d/3d`` and transposed convolutions) and every
``Linear`` is prunable, except the final classifier layer (the last such module in registration order).
Biases and normalization parameters are not pruned, with one reproduction option:
``shortcut_bn_scales=True`` adds the scales (``weight``) of the BatchNorm layers inside residual shortcut
projections, as the paper's reference code does on ResNets.
"""

from __future__ import annotations

from torch import nn

from .errors import InitpruneError

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.modules.conv._ConvNd, nn.Linear)


def prunable_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """All convolution and linear modules that own a ``weight`` parameter, in registration order."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, PRUNABLE_TYPES) and isinstance(getattr(module, "weight", None), nn.Parameter)
    ]


def shortcut_batchnorms(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """BatchNorm layers inside a residual shortcut: the submodules of any module's ``shortcut`` attribute.

    ``shortcut`` is the name of the projection branch in initprune's ResNets and in the paper's reference
    code (kuangliu/pytorch-cifar ResNets).
    """
    found = []
    for name, module in model.named_modules():
        branch = getattr(module, "shortcut", None)
        if isinstance(branch, nn.Module):
            prefix = f"{name}.shortcut" if name else "shortcut"
            found += [
                (f"{prefix}.{sub}" if sub else prefix, m)
                for sub, m in branch.named_modules()
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and isinstance(m.weight, nn.Parameter)
            ]
    return found


def prunable_parameters(
    model: nn.Module,
    *,
    include_classifier: bool = False,
    exclude_first: bool = False,
    shortcut_bn_scales: bool = False,
) -> dict[str, nn.Parameter]:
    """Map ``model.named_parameters()`` names to the prunable weights.

    ``include_classifier`` also prunes the last conv/linear layer (the classifier); ``exclude_first`` keeps
    the first one dense. ``shortcut_bn_scales`` also prunes the scales of the BatchNorm layers in residual
    shortcut projections (:func:`shortcut_batchnorms`): the paper's reference code skips parameters by
    name (``bias``, ``bn``, ``linear``, ``fc``), and its ResNets name the shortcut BatchNorm ``shortcut.1``,
    so those scales enter its global top-k. A reproduction option, not the default: a BatchNorm scale is
    not a connection, and pruning one silences a whole channel of the residual sum. Raises
    :class:`InitpruneError` if nothing is left to prune.
    """
    modules = prunable_modules(model)
    if modules and not include_classifier:
        modules = modules[:-1]
    if modules and exclude_first:
        modules = modules[1:]
    if not modules:
        raise InitpruneError(
            f"model {type(model).__name__} has no prunable parameters: initprune prunes the weights of "
            "Conv*d and Linear modules, except the final classifier unless include_classifier=True"
        )
    if shortcut_bn_scales:
        modules = modules + shortcut_batchnorms(model)
    owned = {id(module.weight): f"{name}.weight" if name else "weight" for name, module in modules}
    # named_parameters() deduplicates shared weights; use its names so keys match the model everywhere.
    return {name: p for name, p in model.named_parameters() if id(p) in owned}
