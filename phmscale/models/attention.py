"""Self-attention variants from Bermeitinger et al. 2024, "Reducing the Transformer
Architecture to a Minimum" (arXiv 2410.13732), with every weight an algebra layer.

All variants share one shape contract: forward (B, T, d) → (B, T, d); `scores(x)` returns the
pre-softmax, pre-mask scores (B, H, T, T) for tests and plots. H heads of width e = d/H.

| variant          | query/key weights            | value/output weights        |
|------------------|------------------------------|-----------------------------|
| standard         | Wq, Wk: d×d each             | Wv, Wo: d×d each            |
| collapsed_qk     | Wqk,h: d×d per head (H·d²)   | Wv, Wo                      |
| collapsed_qk_vo  | Wqk,h                        | Wvo,h: d×d per head, or none |
| symmetric        | one shared W: d×d            | Wv, Wo                      |

Collapsing trades two d×d matrices for H of them, so it saves parameters only with one head
(H = 1: d² instead of 2d²); the paper's point is the smaller *functional* form, which we keep
exact: score_h(i, j) = x_i Wqk,h x_jᵀ / √e equals standard attention when Wqk,h = Wq,h Wk,hᵀ
(tests/models check this). Every variant runs through `F.scaled_dot_product_attention`; the
collapsed ones pass the raw tokens x as the keys (expanded over heads, no copy) and queries of
width d, so SDPA computes x Wqk,h xᵀ with the standard 1/√e scale.

Decoding keeps a `LayerKV` per block: in every variant the keys and values of position j depend
on token j alone (k = x Wk, x or xW; v = x Wv, x Wvo or x), so they are computed once and the
queries of later positions attend to the stored ones. `KVCache` holds one per block.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from phmscale.models.layers import Algebra

Variant = Literal["standard", "collapsed_qk", "collapsed_qk_vo", "symmetric"]
QKV = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class LayerKV:
    """Keys and values of one attention layer for the positions decoded so far.

    Buffers of `capacity` positions are allocated at the first append (no reallocation per
    token: appending by `torch.cat` would copy the whole cache every step, O(T²) over a
    sequence). A key or value that is the raw tokens expanded over heads (collapsed variants,
    stride 0 on the head axis) is stored once, not H times: at H = 4 that is 1/4 of the memory.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity, self.length = capacity, 0
        self._k: torch.Tensor | None = None  # (B, H or 1, capacity, w_k)
        self._v: torch.Tensor | None = None  # (B, H or 1, capacity, w_v)

    def _store(self, buf: torch.Tensor | None, new: torch.Tensor) -> torch.Tensor:
        b, h, t, w = new.shape
        shared = h > 1 and new.stride(1) == 0  # one tensor viewed H times
        if shared:
            new = new[:, :1]  # (B, 1, T, w)
        if buf is None:
            buf = new.new_empty(b, new.shape[1], self.capacity, w)
        buf[:, :, self.length : self.length + t] = new
        return buf

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, H, T, ·) of the next T positions; return those of every position so
        far, (B, H, length, ·) (views of the buffers)."""
        b, h, t, _ = k.shape
        end = self.length + t
        if end > self.capacity:
            raise ValueError(f"KV cache holds {self.capacity} positions; cannot append {t} to "
                             f"the {self.length} stored")
        if self._k is not None and self._k.shape[0] != b:
            raise ValueError(f"KV cache was filled with batch {self._k.shape[0]}, got {b}")
        self._k, self._v = self._store(self._k, k), self._store(self._v, v)
        self.length = end
        return (self._k[:, :, :end].expand(b, h, -1, -1),
                self._v[:, :, :end].expand(b, h, -1, -1))


class KVCache:
    """One `LayerKV` per transformer block; `length` is the number of positions stored, i.e. the
    absolute position of the next token. Valid only for the weights that filled it."""

    def __init__(self, depth: int, capacity: int) -> None:
        self.capacity = capacity
        self.layers = [LayerKV(capacity) for _ in range(depth)]

    @property
    def length(self) -> int:
        return self.layers[0].length


class Attention(nn.Module):
    """Multi-head self-attention; subclasses choose the q/k/v maps and how heads merge."""

    def __init__(self, dim: int, heads: int, causal: bool, dropout: float) -> None:
        super().__init__()
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        self.causal, self.dropout = causal, dropout
        # 1/√e with e = d/H in every variant: collapsed queries have width d but stand for
        # Wq,h Wk,hᵀ of per-head width e, so the same scale keeps the two forms identical.
        self.scale = 1.0 / math.sqrt(self.head_dim)

    def _split(self, y: torch.Tensor) -> torch.Tensor:
        """(B, T, H·w) → (B, H, T, w)."""
        b, t, _ = y.shape
        return y.view(b, t, self.heads, -1).transpose(1, 2)

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The raw tokens as per-head keys/values: (B, T, d) → (B, H, T, d), a view."""
        return x.unsqueeze(1).expand(-1, self.heads, -1, -1)

    def qkv(self, x: torch.Tensor) -> QKV:
        raise NotImplementedError

    def merge(self, out: torch.Tensor) -> torch.Tensor:
        """(B, H, T, e) → (B, T, d) through the output projection."""
        b, _, t, _ = out.shape
        return self.out(out.transpose(1, 2).reshape(b, t, self.dim))

    def forward(self, x: torch.Tensor, cache: LayerKV | None = None) -> torch.Tensor:
        """(B, T, d) → (B, T, d). With `cache`, x holds the T positions after the cached ones:
        their keys/values are appended and the queries attend to every stored position."""
        q, k, v = self.qkv(x)  # (B, H, T, ·)
        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.append(k, v)  # (B, H, past + T, ·)
        mask, is_causal = self._mask(x.shape[1], past, x.device)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal, scale=self.scale,
        )  # (B, H, T, e_v)
        return self.merge(out)

    def _mask(self, t: int, past: int, device: torch.device) -> tuple[torch.Tensor | None, bool]:
        """(attn_mask, is_causal) for T queries at positions past … past+T-1.

        No cache (past = 0) is the training call, unchanged: SDPA's own causal mask. One new
        query may see every stored position, so it needs no mask. Several queries after a
        non-empty cache need the mask shifted by `past` (SDPA's is_causal aligns it top-left).
        """
        if not self.causal or (t == 1 and past > 0):
            return None, False
        if past == 0:
            return None, True
        allowed = torch.ones(t, past + t, dtype=torch.bool, device=device).tril(past)  # (T, P+T)
        return allowed, False

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-softmax scores (B, H, T, T), before the causal mask."""
        q, k, _ = self.qkv(x)
        return (q @ k.transpose(-2, -1)) * self.scale


class StandardAttention(Attention):
    """Wq, Wk, Wv, Wo: four d×d algebra layers (4d²/n parameters plus biases)."""

    def __init__(self, dim: int, heads: int, alg: Algebra, causal: bool, dropout: float) -> None:
        super().__init__(dim, heads, causal, dropout)
        self.q, self.k = alg.linear(dim, dim), alg.linear(dim, dim)
        self.v, self.out = alg.linear(dim, dim), alg.linear(dim, dim)

    def qkv(self, x: torch.Tensor) -> QKV:
        return self._split(self.q(x)), self._split(self.k(x)), self._split(self.v(x))


class CollapsedQKAttention(Attention):
    """One d×d matrix per head in place of Wq,h Wk,hᵀ: score = x Wqk,h xᵀ / √e.

    The bias of `qk` is the exact collapse of standard attention's query bias (bq,h Wk,hᵀ); the
    other bias terms of (xWq + bq)(xWk + bk)ᵀ are constant along each softmax row and drop out.
    """

    def __init__(self, dim: int, heads: int, alg: Algebra, causal: bool, dropout: float) -> None:
        super().__init__(dim, heads, causal, dropout)
        self.qk = alg.linear(dim, heads * dim)  # H blocks of d×d
        self.v, self.out = alg.linear(dim, dim), alg.linear(dim, dim)

    def qkv(self, x: torch.Tensor) -> QKV:
        return self._split(self.qk(x)), self._tokens(x), self._split(self.v(x))  # q, k: (B,H,T,d)


class CollapsedQKVOAttention(Attention):
    """Collapsed query·key and value·output: out = Σ_h softmax(x Wqk,h xᵀ/√e) x Wvo,h.

    `value_output="none"` drops Wvo entirely (Wvo,h = I/H: the head-average of the attended
    tokens, so the residual branch keeps the scale of one head rather than H times it).
    """

    def __init__(
        self, dim: int, heads: int, alg: Algebra, causal: bool, dropout: float,
        value_output: Literal["matrix", "none"] = "matrix",
    ) -> None:
        super().__init__(dim, heads, causal, dropout)
        self.qk = alg.linear(dim, heads * dim)
        self.vo = alg.linear(dim, heads * dim) if value_output == "matrix" else None

    def qkv(self, x: torch.Tensor) -> QKV:
        v = self._tokens(x) if self.vo is None else self._split(self.vo(x))  # (B, H, T, d)
        return self._split(self.qk(x)), self._tokens(x), v

    def merge(self, out: torch.Tensor) -> torch.Tensor:  # (B, H, T, d) → (B, T, d)
        return out.sum(1) if self.vo is not None else out.mean(1)


class SymmetricAttention(Attention):
    """One shared projection for queries and keys: score = (xW)(xW)ᵀ/√e is symmetric in i, j,
    with half the query/key parameters of standard attention (d²/n instead of 2d²/n)."""

    def __init__(self, dim: int, heads: int, alg: Algebra, causal: bool, dropout: float) -> None:
        super().__init__(dim, heads, causal, dropout)
        self.qk = alg.linear(dim, dim)
        self.v, self.out = alg.linear(dim, dim), alg.linear(dim, dim)

    def qkv(self, x: torch.Tensor) -> QKV:
        p = self._split(self.qk(x))  # (B, H, T, e), the same tensor as query and key
        return p, p, self._split(self.v(x))


VARIANTS: dict[str, type[Attention]] = {
    "standard": StandardAttention,
    "collapsed_qk": CollapsedQKAttention,
    "collapsed_qk_vo": CollapsedQKVOAttention,
    "symmetric": SymmetricAttention,
}


def make_attention(
    variant: Variant, dim: int, heads: int, alg: Algebra, causal: bool, dropout: float,
    value_output: Literal["matrix", "none"] = "matrix",
) -> Attention:
    """The attention module of one transformer block (`value_output`: collapsed_qk_vo only)."""
    if variant == "collapsed_qk_vo":
        return CollapsedQKVOAttention(dim, heads, alg, causal, dropout, value_output=value_output)
    return VARIANTS[variant](dim, heads, alg, causal, dropout)  # type: ignore[call-arg]
