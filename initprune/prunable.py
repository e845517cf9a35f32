"""Which parameters are prunable: chosen by module type, never by name substrings.

The rule: the weight matrices that multiply activations in the standard PyTorch layers are prunable,

* ``weight`` of every convolution (``Conv1d/2d/3d`` and transposed convolutions) and every ``Linear``,
  and of ``transformers``' ``Conv1D`` (GPT-2's projections: a linear layer whose weight is stored
  transposed, (in, out));
* the attention projections of ``nn.MultiheadAttention``: ``in_proj_weight`` (or ``q_proj_weight``,
  ``k_proj_weight`` and ``v_proj_weight`` when keys and values have their own sizes) and
  ``out_proj.weight`` — unless ``include_attention=False``, which keeps all of them dense;
* the input and recurrent matrices of ``nn.RNN``, ``nn.LSTM`` and ``nn.GRU`` (``weight_ih_l*``,
  ``weight_hh_l*``, ``weight_hr_l*``, both directions),

in registration order; the last of them is the final classifier, which is kept dense unless
``include_classifier=True``. Biases, normalization parameters, embedding tables and bare parameters of
custom modules (positional embeddings, class tokens) are never pruned. A parameter shared by several
modules (weight tying) is prunable once, and only if every place it is used is: a weight tied to the
classifier, or to a layer kept dense, stays dense.

One reproduction option adds normalization parameters: ``shortcut_bn_scales=True`` adds the scales
(``weight``) of the BatchNorm layers inside residual shortcut projections, as the paper's reference code
does on ResNets.
"""

from __future__ import annotations

import sys

from torch import nn

from .errors import InitpruneError

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.modules.conv._ConvNd, nn.Linear)


def transposed_linear_types() -> tuple[type[nn.Module], ...]:
    """``transformers``' ``Conv1D`` (y = x W + b, W of shape (in, out)) where ``transformers`` is loaded:
    a model holding one has imported it, so it is never imported here."""
    module = sys.modules.get("transformers.pytorch_utils")
    conv1d = getattr(module, "Conv1D", None)
    return (conv1d,) if isinstance(conv1d, type) else ()


def prunable_types() -> tuple[type[nn.Module], ...]:
    """The module types whose ``weight`` is prunable: :data:`PRUNABLE_TYPES` and ``transformers``'
    ``Conv1D``."""
    return PRUNABLE_TYPES + transposed_linear_types()


_ATTENTION_PROJECTIONS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")


def prunable_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """All convolution and linear modules that own a ``weight`` parameter, in registration order."""
    types = prunable_types()
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, types) and isinstance(getattr(module, "weight", None), nn.Parameter)
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


def _weight_names(module: nn.Module) -> list[str]:
    """The prunable weight attributes of one module by its type (no children)."""
    if isinstance(module, prunable_types()):
        return ["weight"]
    if isinstance(module, nn.MultiheadAttention):
        return list(_ATTENTION_PROJECTIONS)
    if isinstance(module, nn.RNNBase):
        return [name for name in module._flat_weights_names if name.startswith("weight_")]
    return []


def prunable_weights(model: nn.Module, *, include_attention: bool = True) -> list[tuple[str, nn.Module, str]]:
    """Every use of a prunable weight matrix in registration order: ``(module path, module, attribute)``.

    A tied parameter appears once per module using it; ``include_attention=False`` leaves out the
    projections of ``nn.MultiheadAttention`` (its ``out_proj`` included).
    """
    attention = [m for m in model.modules() if isinstance(m, nn.MultiheadAttention)]
    skipped = set() if include_attention else {id(m) for a in attention for m in (a, a.out_proj)}
    uses = []
    for module_name, module in model.named_modules():
        if id(module) in skipped:
            continue
        for attr in _weight_names(module):
            if isinstance(module._parameters.get(attr), nn.Parameter):
                uses.append((module_name, module, attr))
    return uses


def prunable_parameters(
    model: nn.Module,
    *,
    include_classifier: bool = False,
    exclude_first: bool = False,
    include_attention: bool = True,
    shortcut_bn_scales: bool = False,
) -> dict[str, nn.Parameter]:
    """Map ``model.named_parameters()`` names to the prunable weights (the rule: see the module docstring).

    Prunable: the ``weight`` of every ``Conv*d``/``ConvTranspose*d``, ``Linear`` and ``transformers``'
    ``Conv1D``, the projections of
    ``nn.MultiheadAttention`` (``in_proj_weight`` or ``q/k/v_proj_weight``, and ``out_proj.weight``) and
    the weight matrices of ``nn.RNN``/``LSTM``/``GRU``, in registration order. ``include_classifier``
    also prunes the last of them (the classifier); ``exclude_first`` keeps the first one dense;
    ``include_attention=False`` keeps every ``nn.MultiheadAttention`` projection dense. A tied parameter
    is listed once, under its ``named_parameters()`` name, and only if every use of it is prunable.
    ``shortcut_bn_scales`` also prunes the scales of the BatchNorm layers in residual shortcut projections
    (:func:`shortcut_batchnorms`): the paper's reference code skips parameters by name (``bias``, ``bn``,
    ``linear``, ``fc``), and its ResNets name the shortcut BatchNorm ``shortcut.1``, so those scales enter
    its global top-k. A reproduction option, not the default: a BatchNorm scale is not a connection, and
    pruning one silences a whole channel of the residual sum. Raises :class:`InitpruneError` if nothing is
    left to prune.
    """
    uses = prunable_weights(model, include_attention=include_attention)
    if uses and not include_classifier:
        uses = uses[:-1]
    if uses and exclude_first:
        uses = uses[1:]
    chosen = {(id(module), attr) for _, module, attr in uses}
    # Every place a parameter is held: a tied weight is prunable only if all of them are chosen.
    holders: dict[int, list[tuple[int, str]]] = {}
    for module in model.modules():
        for attr, p in module._parameters.items():
            if p is not None:
                holders.setdefault(id(p), []).append((id(module), attr))
    kept = {
        id(module._parameters[attr])
        for _, module, attr in uses
        if all(h in chosen for h in holders[id(module._parameters[attr])])
    }
    if not kept:
        raise InitpruneError(
            f"model {type(model).__name__} has no prunable parameters: initprune prunes the weight matrices "
            "of Conv*d, Linear, MultiheadAttention and RNN/LSTM/GRU modules, except the final classifier "
            "unless include_classifier=True"
        )
    if shortcut_bn_scales:
        kept |= {id(m.weight) for _, m in shortcut_batchnorms(model)}
    # named_parameters() deduplicates shared weights; use its names so keys match the model everywhere.
    return {name: p for name, p in model.named_parameters() if id(p) in kept}
