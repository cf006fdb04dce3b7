"""PHM-Transformer (Zhang et al., ICLR 2021): a pre-norm transformer whose every attention
projection and MLP layer is a `PHMLinear` of the spec's algebra (`real` is the dense baseline).

Two tasks share the blocks:
- classify: images (B, C, H, W) cut into p×p patches ViT-style, or sequences (B, C, L) into
  length-p patches (MNIST-1D: [1, 40] with p = 4 is 10 tokens); pooled by a class token or the
  token mean, then a linear head → (B, num_classes).
- causal_lm: bytes (B, T) → (B, T, vocab), tied input/output embeddings, causal attention.
  `decode(tokens, cache)` runs the same network on the positions after those in a `KVCache`
  (phmscale.models.generate drives it); `forward(x)` is the training call, without a cache.

What stays real: token/position embeddings and the class token (lookups, not products),
LayerNorm over all d features (not per algebra component), and by default the patch embedding
and classifier (`real_stem` / `real_head`, AlgebraNets' choice; with `real_stem: false` a patch
vector n does not divide is zero-padded up to a multiple of n, as PHNN pads input channels).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from phmscale.models.attention import KVCache, LayerKV, make_attention
from phmscale.models.layers import REAL, Algebra, pad_features
from phmscale.spec import ModelSpec


def bits_per_byte(loss_nats: float | torch.Tensor) -> float | torch.Tensor:
    """Mean next-byte cross-entropy in nats → bits per byte (one token is one byte): ÷ ln 2."""
    return loss_nats / math.log(2)


class MLP(nn.Module):
    """d → hidden → d with GELU; both layers algebra layers."""

    def __init__(self, dim: int, hidden: int, alg: Algebra, dropout: float) -> None:
        super().__init__()
        self.fc1, self.fc2 = alg.linear(dim, hidden), alg.linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d)
        return self.fc2(self.drop(F.gelu(self.fc1(x))))


class Block(nn.Module):
    """Pre-norm block: x + attn(LN(x)), then x + mlp(LN(x)) unless mlp_ratio is 0."""

    def __init__(self, spec: ModelSpec, alg: Algebra, causal: bool) -> None:
        super().__init__()
        d = spec.dim
        self.norm1 = nn.LayerNorm(d)
        self.attn = make_attention(spec.attention, d, spec.heads, alg, causal, spec.dropout,
                                   spec.value_output)
        hidden = int(spec.mlp_ratio * d)
        self.norm2 = nn.LayerNorm(d) if hidden else None
        self.mlp = MLP(d, hidden, alg, spec.dropout) if hidden else None
        self.drop = nn.Dropout(spec.dropout)

    def forward(self, x: torch.Tensor, cache: LayerKV | None = None) -> torch.Tensor:  # (B, T, d)
        x = x + self.drop(self.attn(self.norm1(x), cache))
        if self.mlp is not None:
            x = x + self.drop(self.mlp(self.norm2(x)))
        return x


def patch_grid(spec: ModelSpec) -> tuple[int, int]:
    """(tokens from patches N, features per patch C·p^k) for task=classify."""
    c, *sides = spec.input_shape
    p = spec.patch_size
    tokens = math.prod(s // p for s in sides)
    return tokens, c * p ** len(sides)


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, H, W) → (B, H/p·W/p, C·p·p) or (B, C, L) → (B, L/p, C·p), row-major patches."""
    if x.dim() == 4:
        b, c, h, w = x.shape
        x = x.view(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)  # (B, H/p, W/p, C, p, p)
        return x.reshape(b, (h // p) * (w // p), c * p * p)
    b, c, length = x.shape
    x = x.view(b, c, length // p, p).permute(0, 2, 1, 3)  # (B, L/p, C, p)
    return x.reshape(b, length // p, c * p)


class PHMTransformer(nn.Module):
    """The PHM-Transformer for `task: classify` or `task: causal_lm`."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.task, self.patch_size = spec.task, spec.patch_size
        alg = Algebra.of(spec)
        d = spec.dim
        causal = spec.task == "causal_lm"
        if causal:
            self.embed = nn.Embedding(spec.vocab_size, d)  # tied with the output layer
            self.seq_len = tokens = spec.seq_len  # positions with an embedding
        else:
            n_patches, patch_dim = patch_grid(spec)
            stem = REAL if spec.real_stem else alg
            self.patch_dim = stem.round_up(patch_dim)  # zero-padded up to a multiple of n
            self.patch_embed = stem.linear(self.patch_dim, d)
            self.cls_token = nn.Parameter(torch.zeros(1, 1, d)) if spec.pool == "cls" else None
            tokens = n_patches + (spec.pool == "cls")
            head = REAL if spec.real_head else alg
            self.num_classes = spec.num_classes
            # A hypercomplex head emits a multiple of n logits; the extra ones are dropped.
            self.head = head.linear(d, head.round_up(spec.num_classes))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, d))
        self.drop = nn.Dropout(spec.dropout)
        self.blocks = nn.ModuleList(Block(spec, alg, causal) for _ in range(spec.depth))
        self.norm = nn.LayerNorm(d)
        self.activation_checkpointing = False
        self._init_embeddings()

    def set_activation_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each block's activations in backward instead of keeping them (training
        calls with autograd on only): less activation memory for about one more forward.
        The function and its gradients are unchanged; dropout replays its random draws."""
        self.activation_checkpointing = enabled

    def _init_embeddings(self) -> None:
        # std 0.02 as in GPT-2/ViT: at d = 64..256 it keeps embeddings well below the LN scale.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.task == "causal_lm":
            nn.init.normal_(self.embed.weight, std=0.02)
        elif self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.task == "causal_lm":
            return self._forward_lm(x)
        return self._forward_classify(x)

    def features(self, h: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Blocks and the final norm: (B, T, d) → (B, T, d). With a cache, h holds positions
        cache.length … cache.length + T - 1 and each block appends its keys/values."""
        start = 0 if cache is None else cache.length
        h = self.drop(h + self.pos_embed[:, start : start + h.shape[1]])
        recompute = (self.activation_checkpointing and self.training and cache is None
                     and torch.is_grad_enabled())
        for i, block in enumerate(self.blocks):
            if recompute:
                h = checkpoint(block, h, use_reentrant=False)
            else:
                h = block(h, None if cache is None else cache.layers[i])
        return self.norm(h)

    def new_cache(self) -> KVCache:
        """An empty KV cache for `decode`, room for seq_len positions (causal_lm only)."""
        self._check_lm()
        return KVCache(len(self.blocks), self.seq_len)

    def decode(self, tokens: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Logits (B, T, V) of tokens (B, T) int64 at positions cache.length onward.

        The first call (empty cache) is the causal prefill of a prompt and equals forward(x);
        later calls usually feed one token. Positions past seq_len have no embedding, so a call
        that would reach them is refused (ValueError) rather than slid over the window.
        """
        self._check_lm()
        return self._forward_lm(tokens, cache)

    def _check_lm(self) -> None:
        if self.task != "causal_lm":
            raise ValueError(f"decoding needs task causal_lm, this model is {self.task}")

    def _forward_lm(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        start, t = (0 if cache is None else cache.length), x.shape[1]
        if start + t > self.seq_len:
            raise ValueError(f"positions {start}..{start + t - 1} exceed the model's context of "
                             f"seq_len={self.seq_len} tokens")
        h = self.features(self.embed(x), cache)  # (B, T, d)
        return F.linear(h, self.embed.weight)  # tied: logits = h Eᵀ  (B, T, V)

    def _forward_classify(self, x: torch.Tensor) -> torch.Tensor:  # (B, *input) → (B, classes)
        patches = pad_features(patchify(x, self.patch_size), self.patch_dim, dim=-1)  # (B, N, P)
        h = self.patch_embed(patches)  # (B, N, d)
        if self.cls_token is not None:
            h = torch.cat([self.cls_token.expand(h.shape[0], -1, -1), h], dim=1)  # (B, 1+N, d)
        h = self.features(h)
        pooled = h[:, 0] if self.cls_token is not None else h.mean(dim=1)  # (B, d)
        return self.head(pooled)[:, : self.num_classes]
