"""Small text transformers on byte tokens: ``transformer_lm`` (decoder-only language model) and
``transformer_cls`` (sequence classifier).

Both are pre-LayerNorm transformers (Radford et al. 2019, GPT-2; Xiong et al. 2020): token and learned
position embeddings, blocks x + Attn(LN(x)) and x + MLP(LN(x)) with a GELU MLP, a final LayerNorm and a
Linear head. Attention has four ``nn.Linear`` projections (``q``, ``k``, ``v``, ``out``), so each is a
prunable layer of its own and the per-layer densities tell attention from MLP; softmax(q kᵀ/√d) v goes
through ``F.scaled_dot_product_attention`` (causal in the LM), whose math kernel the second-order criteria
select for their double backward.

What is pruned (initprune's module-type rule): the weights of the ``q``/``k``/``v``/``out`` projections and
of both MLP Linear layers of every block. What stays dense: the token and position embeddings (embedding
tables are never prunable), the LayerNorms, every bias, and the head, which is the classifier (the last
Linear); in the LM the head is by default tied to the token embedding (``tie_embeddings=True``, one matrix
for input and output), which keeps it dense on both counts.

Initialization (GPT-2's): Linear and embedding weights N(0, 0.02²), the residual projections (``out`` and
the second MLP layer) N(0, (0.02/√(2·depth))²), zero biases, LayerNorm weight 1 and bias 0.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InitpruneError, unknown_choice
from .registry import register_model

POOLINGS = ("mean", "cls")


class SelfAttention(nn.Module):
    """Multi-head self-attention with separate ``q``, ``k``, ``v`` and ``out`` Linear projections."""

    def __init__(self, dim: int, heads: int, causal: bool) -> None:
        super().__init__()
        self.heads, self.causal = heads, causal
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, keep: Tensor | None = None) -> Tensor:
        """``keep`` (B, 1, 1, L) bool: the keys each query may attend to (None: all, or causal)."""
        b, n, d = x.shape

        def heads(t: Tensor) -> Tensor:
            return t.view(b, n, self.heads, d // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            heads(self.q(x)), heads(self.k(x)), heads(self.v(x)), attn_mask=keep, is_causal=self.causal
        )
        return self.out(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-LayerNorm block: x + Attn(LN(x)), then x + fc2(GELU(fc1(LN(x))))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, causal: bool) -> None:
        super().__init__()
        hidden = round(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, causal)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor, keep: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.norm1(x), keep)
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class _TextTransformer(nn.Module):
    """Embeddings and blocks shared by the two models."""

    def __init__(
        self, vocab: int, max_len: int, dim: int, depth: int, heads: int, mlp_ratio: float, causal: bool
    ) -> None:
        super().__init__()
        self.max_len = max_len
        self.tok_embed = nn.Embedding(vocab, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, max_len, dim))
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio, causal) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)

    def _init_weights(self, depth: int) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.02)
        for block in self.blocks:
            for layer in (block.attn.out, block.fc2):
                nn.init.normal_(layer.weight, std=0.02 / math.sqrt(2 * depth))

    def _check_tokens(self, tokens: Tensor, limit: int) -> None:
        if tokens.is_floating_point() or tokens.dim() != 2:
            raise InitpruneError(
                f"{type(self).__name__} takes integer token ids of shape (batch, length), got "
                f"{tuple(tokens.shape)} {tokens.dtype}"
            )
        if tokens.shape[1] > limit:
            raise InitpruneError(
                f"sequences of {tokens.shape[1]} tokens are longer than max_len={limit}; build the "
                "model with a larger max_len"
            )


class TransformerLM(_TextTransformer):
    """Decoder-only language model: logits (B, L, vocab) for the next token at every position."""

    def __init__(
        self,
        vocab: int,
        max_len: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_ratio: float,
        tie_embeddings: bool,
    ) -> None:
        super().__init__(vocab, max_len, dim, depth, heads, mlp_ratio, causal=True)
        self.head = nn.Linear(dim, vocab, bias=False)
        self._init_weights(depth)
        if tie_embeddings:
            self.head.weight = self.tok_embed.weight

    def forward(self, tokens: Tensor) -> Tensor:
        self._check_tokens(tokens, self.max_len)
        x = self.tok_embed(tokens) + self.pos_embed[:, : tokens.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


class TransformerClassifier(_TextTransformer):
    """Sequence classifier: the mean of the non-padding token states (``pooling="mean"``) or a class token
    prepended at position 0 (``"cls"``), then LayerNorm and a Linear head. Tokens equal to ``pad_id`` are
    padding: no query attends to them and the mean leaves them out (``pad_id=-1``: no padding)."""

    def __init__(
        self,
        vocab: int,
        num_classes: int,
        max_len: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_ratio: float,
        pooling: str,
        pad_id: int,
    ) -> None:
        extra = 1 if pooling == "cls" else 0
        super().__init__(vocab, max_len + extra, dim, depth, heads, mlp_ratio, causal=False)
        self.pooling, self.pad_id = pooling, pad_id
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if pooling == "cls" else None
        self.head = nn.Linear(dim, num_classes)
        self._init_weights(depth)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=0.02)

    def forward(self, tokens: Tensor) -> Tensor:
        self._check_tokens(tokens, self.max_len - (self.cls_token is not None))
        keep = tokens != self.pad_id  # (B, L)
        x = self.tok_embed(tokens)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
            keep = torch.cat([keep.new_ones(keep.shape[0], 1), keep], dim=1)
        x = x + self.pos_embed[:, : x.shape[1]]
        mask = keep[:, None, None, :]
        for block in self.blocks:
            x = block(x, mask)
        x = self.norm(x)
        if self.cls_token is not None:
            pooled = x[:, 0]
        else:
            weights = keep.to(x.dtype).unsqueeze(-1)
            pooled = (x * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return self.head(pooled)


def _check(what: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InitpruneError(f"{what} must be a positive integer, got {value!r}")
    return value


def _check_sizes(dim: int, depth: int, heads: int, mlp_ratio: float, max_len: int) -> None:
    for what, value in (("dim", dim), ("depth", depth), ("heads", heads), ("max_len", max_len)):
        _check(what, value)
    if dim % heads:
        raise InitpruneError(f"dim {dim} is not a multiple of heads {heads}")
    if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, (int, float)) or mlp_ratio <= 0:
        raise InitpruneError(f"mlp_ratio must be a positive number, got {mlp_ratio!r}")


@register_model(
    "transformer_lm",
    "decoder-only byte transformer LM (pre-LN, causal SDPA, GELU MLP, tied embeddings): dim 128, depth 4",
    inputs="tokens",
)
def transformer_lm(
    *,
    num_classes: int = 256,
    in_channels: int = 1,
    max_len: int = 128,
    dim: int = 128,
    depth: int = 4,
    heads: int = 4,
    mlp_ratio: float = 4.0,
    tie_embeddings: bool = True,
) -> nn.Module:
    """A small GPT-style language model; ``num_classes`` is the vocabulary (256 for bytes), for inputs and
    outputs alike; ``in_channels`` is ignored (token inputs). About 0.8 M parameters at the defaults."""
    _check_sizes(dim, depth, heads, mlp_ratio, max_len)
    if not isinstance(tie_embeddings, bool):
        raise InitpruneError(f"tie_embeddings must be true or false, got {tie_embeddings!r}")
    return TransformerLM(num_classes, max_len, dim, depth, heads, mlp_ratio, tie_embeddings)


@register_model(
    "transformer_cls",
    "byte transformer classifier (pre-LN, SDPA, GELU MLP, mean pooling or class token): dim 128, depth 4",
    inputs="tokens",
)
def transformer_cls(
    *,
    num_classes: int = 10,
    in_channels: int = 1,
    vocab: int = 256,
    max_len: int = 128,
    dim: int = 128,
    depth: int = 4,
    heads: int = 4,
    mlp_ratio: float = 4.0,
    pooling: str = "mean",
    pad_id: int = 0,
) -> nn.Module:
    """A small transformer encoder over ``vocab`` tokens for ``num_classes`` classes; ``pooling`` is
    ``mean`` (over non-padding tokens) or ``cls`` (a class token); ``pad_id`` marks padding (byte 0 in the
    fortunes data; -1: none). ``in_channels`` is ignored (token inputs)."""
    _check_sizes(dim, depth, heads, mlp_ratio, max_len)
    _check("vocab", vocab)
    if pooling not in POOLINGS:
        raise unknown_choice("pooling", pooling, POOLINGS)
    if isinstance(pad_id, bool) or not isinstance(pad_id, int):
        raise InitpruneError(f"pad_id must be an integer (-1: no padding), got {pad_id!r}")
    return TransformerClassifier(vocab, num_classes, max_len, dim, depth, heads, mlp_ratio, pooling, pad_id)
