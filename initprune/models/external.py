"""Models of other libraries by name: ``timm:NAME`` and ``tv:NAME`` (torchvision).

``timm:NAME`` builds ``timm.create_model(NAME, pretrained=False, num_classes=..., in_chans=...)``;
models that take an ``img_size`` (ViT, Swin, ...) get the data's image size. ``tv:NAME`` builds
``torchvision.models.get_model(NAME, weights=None, num_classes=...)`` with its first convolution rebuilt
for ``in_channels`` (its weight: the model's own initialization of the first ``in_channels`` input
channels, repeated where there are more than 3, so the entries keep their initial distribution). Any
other model option is passed on to ``timm.create_model`` / the torchvision builder (``drop_rate=0.1``,
``patch_size=4``).

Small inputs: a model whose total stride exceeds the image (ConvNeXt's last 2×2 downsampling on 28×28
Fashion-MNIST) cannot run it. The builder runs one forward pass on a zero image of the data's size; if
it fails, the inputs are resized (bilinear) to the model's total stride (timm's ``feature_info``; 32
otherwise) before the model, with a warning that says so. ``input_resize=N`` chooses the size
(always resizing to N×N); a model that fails at every size is an error naming it.

Pretrained weights are never loaded (pruning at initialization). Install with
``pip install 'initprune[timm]'``: timm and torchvision, which must be the build made for the installed
torch.
"""

from __future__ import annotations

import difflib
import importlib
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InitpruneError

FORMS = {
    "timm:NAME": "any timm model by name, e.g. timm:convnext_atto (timm.create_model, pretrained=False; "
    "pip install 'initprune[timm]')",
    "tv:NAME": "any torchvision classification model, e.g. tv:resnet18 (weights=None; the first conv "
    "adapted to in_channels; pip install torchvision)",
}
_LIBRARY = {"timm": "timm", "tv": "torchvision"}
_INSTALL = {
    "timm": "pip install 'initprune[timm]' (timm and the torchvision built for your torch)",
    "torchvision": "pip install torchvision (the build made for your torch)",
}


def is_external(name: str) -> bool:
    """True for ``timm:...`` and ``tv:...`` names."""
    return name.partition(":")[0] in _LIBRARY and ":" in name


def _import(name: str, library: str) -> Any:
    try:
        return importlib.import_module(library)
    except ModuleNotFoundError as exc:
        missing = exc.name or library
        raise InitpruneError(
            f"model {name!r} needs {library}, but {missing} is not installed: {_INSTALL[library]}"
        ) from None
    except Exception as exc:  # installed but broken, e.g. a torchvision built for another torch
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InitpruneError(
            f"model {name!r} needs {library}, which does not import beside torch {torch.__version__} "
            f"({type(exc).__name__}: {first}); install the torchvision and {library} built for this torch: "
            f"{_INSTALL[library]}"
        ) from None


def _unknown(name: str, library: str, known: list[str], listing: str) -> InitpruneError:
    prefix, _, wanted = name.partition(":")
    close = difflib.get_close_matches(wanted, known, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(f'{prefix}:{c}' for c in close)}?" if close else ""
    return InitpruneError(f"unknown {library} model {wanted!r} in {name!r}{hint} ({listing} lists them)")


class ResizeInput:
    """Forward pre-hook resizing the first input to ``size × size`` (bilinear), for models whose total
    stride exceeds the data's images. A plain object, so a model holding it deep-copies and pickles."""

    def __init__(self, size: int) -> None:
        self.size = int(size)

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x = args[0]
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return (x, *args[1:])


def _runs(model: nn.Module, in_channels: int, size: int) -> str | None:
    """None if ``model`` runs on one zero image of ``size × size``, else the error's first line. Eval mode
    and no gradient: the forward changes no parameter or buffer."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_channels, size, size))
        return None
    except Exception as exc:  # the model's own shape errors, whatever their type
        return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    finally:
        model.train(was_training)


def _fit_input(
    name: str,
    model: nn.Module,
    in_channels: int,
    image_size: int | None,
    input_resize: int | None,
    stride: int,
) -> nn.Module:
    if input_resize is not None:
        if isinstance(input_resize, bool) or not isinstance(input_resize, int) or input_resize < 1:
            raise InitpruneError(f"input_resize must be a positive integer or None, got {input_resize!r}")
        model.register_forward_pre_hook(ResizeInput(input_resize))
        size = input_resize
    elif image_size is None:
        return model
    else:
        size = image_size
    problem = _runs(model, in_channels, size)
    if problem is None:
        return model
    if input_resize is None and image_size < stride:
        if _runs(model, in_channels, stride) is None:
            warnings.warn(
                f"model {name!r} does not run on {image_size}×{image_size} inputs ({problem}); its inputs "
                f"are resized to {stride}×{stride} (bilinear) before the model; model option input_resize=N "
                "chooses the size",
                UserWarning,
                stacklevel=4,
            )
            model.register_forward_pre_hook(ResizeInput(stride))
            return model
    raise InitpruneError(
        f"model {name!r} does not run on {in_channels}×{size}×{size} inputs ({problem}); give the model "
        "option input_resize=N (the side the inputs are resized to) or options that fit small inputs"
    )


def _build_error(name: str, exc: Exception) -> InitpruneError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return InitpruneError(f"cannot build model {name!r}: {type(exc).__name__}: {first}")


def _timm_builder(name: str, timm: Any) -> Callable[..., nn.Module]:
    wanted = name.partition(":")[2]

    def build(
        *, num_classes: int, in_channels: int, image_size: int | None = None, input_resize: int | None = None,
        **options: Any,
    ) -> nn.Module:  # fmt: skip
        kwargs = {"pretrained": False, "num_classes": num_classes, "in_chans": in_channels, **options}
        model = None
        if image_size is not None and "img_size" not in kwargs:
            try:
                model = timm.create_model(wanted, img_size=input_resize or image_size, **kwargs)
            except TypeError as exc:  # the model takes no img_size (CNNs)
                if "img_size" not in str(exc):
                    raise _build_error(name, exc) from None
            except Exception as exc:  # e.g. a patch size that does not divide the image
                raise _build_error(name, exc) from None
        if model is None:
            try:
                model = timm.create_model(wanted, **kwargs)
            except Exception as exc:
                raise _build_error(name, exc) from None
        info = getattr(model, "feature_info", None)
        stride = 32
        if isinstance(info, list) and info and isinstance(info[-1], dict) and "reduction" in info[-1]:
            stride = int(info[-1]["reduction"])
        return _fit_input(name, model, in_channels, image_size, input_resize, stride)

    return build


def _adapt_first_conv(model: nn.Module, in_channels: int) -> None:
    """Rebuild the first 3-channel ``Conv2d`` for ``in_channels`` (torchvision models take RGB)."""
    found = [(p, m) for p, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.in_channels == 3]
    if not found:
        return
    path, conv = found[0]
    new = nn.Conv2d(
        in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
        conv.groups, conv.bias is not None, conv.padding_mode,
    )  # fmt: skip
    with torch.no_grad():
        index = torch.arange(in_channels) % 3
        new.weight.copy_(conv.weight[:, index])
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    parent_path, _, attr = path.rpartition(".")
    setattr(model.get_submodule(parent_path), attr, new)


def _tv_builder(name: str, tv: Any) -> Callable[..., nn.Module]:
    wanted = name.partition(":")[2]

    def build(
        *, num_classes: int, in_channels: int, image_size: int | None = None, input_resize: int | None = None,
        **options: Any,
    ) -> nn.Module:  # fmt: skip
        try:
            model = tv.models.get_model(wanted, weights=None, num_classes=num_classes, **options)
        except Exception as exc:
            raise _build_error(name, exc) from None
        if in_channels != 3:
            _adapt_first_conv(model, in_channels)
        return _fit_input(name, model, in_channels, image_size, input_resize, 32)

    return build


def external_builder(name: str) -> tuple[Callable[..., nn.Module], str]:
    """(builder, description) of ``timm:NAME`` or ``tv:NAME``; a missing or broken library or an unknown
    name raises :class:`InitpruneError` saying how to install it or which names come close."""
    prefix, _, wanted = name.partition(":")
    library = _LIBRARY[prefix]
    if not wanted:
        raise InitpruneError(f"model {name!r} names no model: write {prefix}:NAME, e.g. {prefix}:resnet18")
    module = _import(name, library)
    if prefix == "timm":
        known = list(module.list_models())
        if wanted not in known:
            raise _unknown(name, "timm", known, "timm.list_models()")
        return _timm_builder(name, module), f"timm.create_model({wanted!r}, pretrained=False)"
    _import(name, "torchvision.models")
    known = list(module.models.list_models(module=module.models))
    if wanted not in known:
        raise _unknown(name, "torchvision", known, "torchvision.models.list_models()")
    return _tv_builder(name, module), f"torchvision.models.{wanted}(weights=None)"


__all__ = ["FORMS", "ResizeInput", "external_builder", "is_external"]
