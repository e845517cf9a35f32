"""Model registry: the networks of the pruning-at-initialization experiments (arXiv 2502.11450, §4).

``models()`` lists every registered model with a one-line description; ``create_model(name, num_classes,
in_channels, **options)`` builds one. Every model takes ``num_classes`` and ``in_channels`` and runs on
28×28 (MNIST family), 32×32 (CIFAR) and 64×64 (TinyImageNet) inputs; the two whose first layer depends on
the input size (``lenet300`` and the ViTs) take an ``image_size`` option. In every model the classifier is
the last Conv/Linear module registered, which initprune keeps dense by default. ``timm:NAME`` and
``tv:NAME`` build timm and torchvision models (:mod:`.external`; ``FORMS`` describes them).
"""

from . import lenet, resnet, resnet_cifar, transformer, vgg, vit  # noqa: F401  (registers the models)
from .external import FORMS
from .registry import (
    ModelEntry,
    check_model_options,
    create_model,
    get_model,
    model_options,
    models,
    register_model,
)

__all__ = [
    "FORMS",
    "ModelEntry",
    "check_model_options",
    "create_model",
    "get_model",
    "model_options",
    "models",
    "register_model",
]
