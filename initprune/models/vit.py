"""Vision Transformers (Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021) for small images.

Patch size 4 on 32×32 inputs by default (64 patches plus a class token), pre-norm blocks, GELU MLP, a learned
positional embedding and a Linear head on the class token; ViT-Tiny/Small widths from Touvron et al.
(DeiT, ICML 2021). Attention is written with explicit ``nn.Linear`` layers (``qkv`` and ``proj``) rather
than ``nn.MultiheadAttention``, so every weight matrix is prunable by module type, and the head is the last
Linear registered, so initprune keeps it dense as the classifier. No dropout. ``vit_tiny`` takes
``norm="batchnorm"``: BatchNorm over tokens in place of every LayerNorm (:class:`TokenBatchNorm`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InitpruneError, unknown_choice
from .common import trunc_normal_
from .registry import register_model

ATTENTION_IMPLS = ("auto", "fused", "math")
NORMS = ("layernorm", "batchnorm")


class TokenBatchNorm(nn.BatchNorm1d):
    """BatchNorm over the channels of a token sequence (B, N, D): each of the D features is normalized with
    statistics pooled over the batch and all N tokens (class token included), running statistics kept as in
    ``BatchNorm1d`` (Yao et al. 2021, "Leveraging Batch Normalization for Vision Transformers"). In eval
    mode it is a fixed affine map per feature, so samples do not interact."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


def make_norm(norm: str, dim: int) -> nn.Module:
    """``layernorm`` (per token, over its D features) or ``batchnorm`` (:class:`TokenBatchNorm`)."""
    return nn.LayerNorm(dim) if norm == "layernorm" else TokenBatchNorm(dim)


class Attention(nn.Module):
    """Multi-head self-attention: one ``qkv`` Linear, scaled dot-product attention, one ``proj`` Linear.

    ``impl`` picks how softmax(q kᵀ / √d) v is computed: ``"fused"`` calls ``F.scaled_dot_product_attention``
    (fast, but its fused CPU and GPU kernels have no second derivative, so Hessian-vector products through
    them fail); ``"math"`` writes it out with matmul and softmax (any order of derivative, under
    ``torch.func`` too); ``"auto"`` uses the fused kernel in training mode or without gradients and the math
    form in eval mode with gradients on, which is how initprune scores.
    """

    def __init__(self, dim: int, heads: int, impl: str = "auto") -> None:
        super().__init__()
        self.heads = heads
        self.impl = impl
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        fused = self.impl == "fused" or (
            self.impl == "auto" and (self.training or not torch.is_grad_enabled())
        )
        if fused:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            weights = torch.softmax((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1), dim=-1)
            out = weights @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x)) with a GELU MLP."""

    def __init__(
        self, dim: int, heads: int, mlp_ratio: float, attention: str, norm: str = "layernorm"
    ) -> None:
        super().__init__()
        hidden = round(dim * mlp_ratio)
        self.norm1 = make_norm(norm, dim)
        self.attn = Attention(dim, heads, attention)
        self.norm2 = make_norm(norm, dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class VisionTransformer(nn.Module):
    """ViT with a Conv2d patch embedding, class token and learned positional embedding.

    The positional embedding has one entry per patch of an ``image_size``×``image_size`` input; an input of
    another size raises an error naming the ``image_size`` to build with.

    Initialization (timm's): Linear weights, the class token and the positional embedding from a normal
    with std 0.02 truncated at ±2 std, zero biases; the patch embedding is initialized like a Linear on the
    flattened patch (same truncated normal); LayerNorm weight 1 and bias 0. The head is not zeroed, so
    gradient-based scores see signal through it at initialization.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        image_size: int,
        patch_size: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_ratio: float,
        attention: str,
        norm: str = "layernorm",
    ) -> None:
        super().__init__()
        self.grid = image_size // patch_size
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid * self.grid, dim))
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio, attention, norm) for _ in range(depth)])
        self.norm = make_norm(norm, dim)
        self.head = nn.Linear(dim, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        trunc_normal_(self.cls_token, std=0.02)
        trunc_normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.LayerNorm, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)
        if x.shape[-2:] != (self.grid, self.grid):
            side = self.grid * self.patch_embed.stride[0]
            raise InitpruneError(
                f"this ViT was built for {side}×{side} inputs ({self.grid}×{self.grid} patches), got a "
                f"{x.shape[-2]}×{x.shape[-1]} patch grid; pass image_size= to match the data"
            )
        x = x.flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


def _check_int(what: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InitpruneError(f"{what} must be a positive integer, got {value!r}")
    return value


def vit(
    num_classes: int,
    in_channels: int,
    image_size: int,
    patch_size: int,
    dim: int,
    depth: int,
    heads: int,
    mlp_ratio: float,
    attention: str,
    norm: str = "layernorm",
) -> VisionTransformer:
    """Check the options and build a :class:`VisionTransformer`."""
    for what, value in (("image_size", image_size), ("patch_size", patch_size), ("dim", dim)):
        _check_int(what, value)
    _check_int("depth", depth)
    _check_int("heads", heads)
    if image_size % patch_size:
        raise InitpruneError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
    if dim % heads:
        raise InitpruneError(f"dim {dim} is not a multiple of heads {heads}")
    if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, (int, float)) or mlp_ratio <= 0:
        raise InitpruneError(f"mlp_ratio must be a positive number, got {mlp_ratio!r}")
    if attention not in ATTENTION_IMPLS:
        raise unknown_choice("attention implementation", attention, ATTENTION_IMPLS)
    if norm not in NORMS:
        raise unknown_choice("norm", norm, NORMS)
    return VisionTransformer(
        num_classes, in_channels, image_size, patch_size, dim, depth, heads, mlp_ratio, attention, norm
    )


@register_model(
    "vit_tiny", "ViT-Tiny (Dosovitskiy et al. 2021): dim 192, depth 12, 3 heads, patch 4 on 32×32"
)
def vit_tiny(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
    patch_size: int = 4,
    dim: int = 192,
    depth: int = 12,
    heads: int = 3,
    mlp_ratio: float = 4.0,
    attention: str = "auto",
    norm: str = "layernorm",
) -> nn.Module:
    """ViT-Tiny (Dosovitskiy et al. 2021; DeiT-Ti widths) with patch size 4 for 32×32 images.

    Pass ``image_size=28`` for MNIST-family and ``image_size=64`` for TinyImageNet inputs. ``attention`` is
    ``"auto"``, ``"fused"`` or ``"math"`` (see :class:`Attention`; ``"auto"`` supports every criterion).
    ``norm="batchnorm"`` puts BatchNorm in place of every LayerNorm (both of each block and the final one;
    :class:`TokenBatchNorm`: per feature, statistics over batch and tokens), so that a BatchNorm warmup
    changes what the criteria see; ``"layernorm"`` (default) is the standard ViT, with no statistics.
    """
    return vit(
        num_classes, in_channels, image_size, patch_size, dim, depth, heads, mlp_ratio, attention, norm
    )


@register_model(
    "vit_small", "ViT-Small (Dosovitskiy et al. 2021): dim 384, depth 12, 6 heads, patch 4 on 32×32"
)
def vit_small(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
    patch_size: int = 4,
    dim: int = 384,
    depth: int = 12,
    heads: int = 6,
    mlp_ratio: float = 4.0,
    attention: str = "auto",
) -> nn.Module:
    """ViT-Small (Dosovitskiy et al. 2021; DeiT-S widths) with patch size 4 for 32×32 images.

    Pass ``image_size=28`` for MNIST-family and ``image_size=64`` for TinyImageNet inputs. ``attention`` is
    ``"auto"``, ``"fused"`` or ``"math"`` (see :class:`Attention`; ``"auto"`` supports every criterion).
    """
    return vit(num_classes, in_channels, image_size, patch_size, dim, depth, heads, mlp_ratio, attention)
