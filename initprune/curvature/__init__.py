"""The curvature engine: pure estimators that the criteria (``initprune.scores``) are built on.

Layers, bottom up: ``samples`` (batches, chunks, the tempered loss, functional views of a model) →
``per_sample`` (batched Σ_i J_iᵀv_i and Σ_i (J_iᵀv_i)²: the empirical Fisher) and ``hvp`` (batch gradients,
Hessian-vector products, the Hutchinson diagonal, its probes from the counter-based generator of
``probes``) → ``ggn`` (exact Gauss-Newton and Monte-Carlo Fisher diagonals on the per-sample engine);
``memory`` sizes every batched pass by the device's free memory (:func:`set_memory_budget` and
``INITPRUNE_MEMORY_BUDGET`` override it). Every estimator uses mean reduction over all N scoring samples
and leaves the model's parameters, buffers and flags as they were.
"""

from .ggn import ggn_diagonal, mc_fisher_diagonal, sample_model_labels
from .hvp import (
    HUTCHINSON_CHUNK_BYTES,
    batch_gradient,
    hessian_vector_product,
    hutchinson_chunk_size,
    hutchinson_diagonal,
    hutchinson_route,
    rademacher_probes,
)
from .memory import MEMORY_BUDGET_ENV, memory_budget, set_memory_budget
from .per_sample import auto_chunk_size, per_sample_gradient_moments, per_sample_square_sums
from .probes import PROBE_GENERATOR
from .samples import Batch, TensorDict, functional_parts, iter_chunks, num_samples

__all__ = [
    "HUTCHINSON_CHUNK_BYTES",
    "MEMORY_BUDGET_ENV",
    "PROBE_GENERATOR",
    "Batch",
    "TensorDict",
    "auto_chunk_size",
    "batch_gradient",
    "functional_parts",
    "ggn_diagonal",
    "hessian_vector_product",
    "hutchinson_chunk_size",
    "hutchinson_diagonal",
    "hutchinson_route",
    "iter_chunks",
    "mc_fisher_diagonal",
    "memory_budget",
    "num_samples",
    "per_sample_gradient_moments",
    "per_sample_square_sums",
    "rademacher_probes",
    "sample_model_labels",
    "set_memory_budget",
]
