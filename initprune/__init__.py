"""initprune: pruning neural networks at initialization with scalable second-order information.

The system of *What Scalable Second-Order Information Knows for Pruning at Initialization*
(arXiv 2502.11450): score every prunable weight of a freshly initialized model, keep the best fraction,
and train the sparse network with the mask held fixed.
"""

from .errors import DegenerateScoresWarning, InitpruneError, LayerCollapseWarning
from .export import load_export, save_export
from .hold import MaskHandle
from .masks import Mask, make_mask
from .prunable import prunable_parameters
from .pruning import prune
from .scores import criteria, get_criterion, score
from .warmup import warmup_bn

__all__ = [
    "DegenerateScoresWarning",
    "InitpruneError",
    "LayerCollapseWarning",
    "Mask",
    "MaskHandle",
    "criteria",
    "get_criterion",
    "load_export",
    "make_mask",
    "prunable_parameters",
    "prune",
    "save_export",
    "score",
    "warmup_bn",
]
__version__ = "0.1.0"
