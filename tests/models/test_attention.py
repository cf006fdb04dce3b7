"""Attention semantics: causality, symmetry, and the collapsed forms' exactness."""

from __future__ import annotations

import pytest
import torch

from phmscale.models import build_model, make_attention
from phmscale.models.attention import (
    CollapsedQKAttention,
    CollapsedQKVOAttention,
    StandardAttention,
    SymmetricAttention,
)
from phmscale.models.layers import REAL
from tests.models.helpers import lm

VARIANTS = ["standard", "collapsed_qk", "collapsed_qk_vo", "symmetric"]


def set_weight(layer: torch.nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> None:
    """Set a real (n = 1) PHM layer: its weight is S[0] (A = [[[1]]])."""
    assert layer.S.shape[0] == 1
    with torch.no_grad():
        layer.S.copy_(weight.unsqueeze(0))
        layer.bias.copy_(bias)
    assert torch.allclose(layer.weight, weight)


@pytest.mark.parametrize("attention", VARIANTS)
@pytest.mark.parametrize("mlp_ratio", [0, 2])
def test_causal_lm_never_attends_to_the_future(attention: str, mlp_ratio: float) -> None:
    torch.manual_seed(0)
    model = build_model(lm(attention=attention, mlp_ratio=mlp_ratio, algebra="quaternion",
                           n=None)).eval()
    x = torch.randint(0, 256, (2, 16))
    changed = x.clone()
    changed[:, 9:] = (changed[:, 9:] + 1 + torch.randint(0, 254, (2, 7))) % 256  # all differ
    with torch.no_grad():
        a, b = model(x), model(changed)
    torch.testing.assert_close(a[:, :9], b[:, :9], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(a[:, 9:], b[:, 9:])  # the change is visible from position 9 on


@pytest.mark.parametrize("algebra", ["real", "quaternion", "phm"])
def test_symmetric_scores_are_symmetric(algebra: str) -> None:
    torch.manual_seed(0)
    from phmscale.models.layers import Algebra
    alg = Algebra(algebra, 1 if algebra == "real" else 4)
    attn = make_attention("symmetric", 16, 2, alg, causal=False, dropout=0.0)
    scores = attn.scores(torch.randn(3, 7, 16))  # (B, H, T, T)
    assert scores.shape == (3, 2, 7, 7)
    torch.testing.assert_close(scores, scores.transpose(-1, -2))


def test_symmetric_halves_query_key_params() -> None:
    sym = SymmetricAttention(32, 4, REAL, causal=False, dropout=0.0)
    std = StandardAttention(32, 4, REAL, causal=False, dropout=0.0)
    qk_sym = sum(p.numel() for p in sym.qk.parameters())
    qk_std = sum(p.numel() for p in [*std.q.parameters(), *std.k.parameters()])
    assert 2 * qk_sym == qk_std


def _standard(d: int, heads: int, causal: bool) -> StandardAttention:
    torch.manual_seed(0)
    std = StandardAttention(d, heads, REAL, causal=causal, dropout=0.0)
    with torch.no_grad():  # non-zero biases so the bias terms are exercised too
        for layer in (std.q, std.k, std.v, std.out):
            layer.bias.normal_()
    return std


@pytest.mark.parametrize("causal", [False, True])
def test_collapsed_qk_matches_standard_with_wqk_equal_wq_wkT(causal: bool) -> None:
    d, heads = 16, 4
    e = d // heads
    std = _standard(d, heads, causal)
    col = CollapsedQKAttention(d, heads, REAL, causal=causal, dropout=0.0)
    wq, wk, bq = std.q.weight, std.k.weight, std.q.bias  # (d, d): rows are outputs
    # score_h(i, j) = (Wq,h x_i + bq,h)·(Wk,h x_j + …) = x_iᵀ (Wq,hᵀ Wk,h) x_j + (Wk,hᵀ bq,h)·x_j
    # + terms constant along j (softmax-invariant). Collapsed: q' = M_h x + c_h against k' = x.
    blocks = [wk[h * e:(h + 1) * e].T @ wq[h * e:(h + 1) * e] for h in range(heads)]  # M_h
    biases = [wk[h * e:(h + 1) * e].T @ bq[h * e:(h + 1) * e] for h in range(heads)]  # c_h
    set_weight(col.qk, torch.cat(blocks), torch.cat(biases))
    set_weight(col.v, std.v.weight.detach(), std.v.bias.detach())
    set_weight(col.out, std.out.weight.detach(), std.out.bias.detach())
    x = torch.randn(2, 9, d)
    with torch.no_grad():
        torch.testing.assert_close(col(x), std(x), rtol=1e-4, atol=1e-5)
        # Scores differ from standard's only by a per-row constant.
        diff = col.scores(x) - std.scores(x)
        torch.testing.assert_close(diff, diff[..., :1].expand_as(diff), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("causal", [False, True])
def test_collapsed_qk_vo_matches_standard_with_wvo_equal_wv_wo(causal: bool) -> None:
    d, heads = 16, 4
    e = d // heads
    std = _standard(d, heads, causal)
    col = CollapsedQKVOAttention(d, heads, REAL, causal=causal, dropout=0.0)
    wq, wk, bq = std.q.weight, std.k.weight, std.q.bias
    wv, bv, wo, bo = std.v.weight, std.v.bias, std.out.weight, std.out.bias
    rows = [slice(h * e, (h + 1) * e) for h in range(heads)]
    set_weight(col.qk, torch.cat([wk[r].T @ wq[r] for r in rows]),
               torch.cat([wk[r].T @ bq[r] for r in rows]))
    # out = Σ_h A_h (x Wv,hᵀ + bv,h) Wo,hᵀ + bo; rows of A_h sum to 1, so bo splits over heads.
    set_weight(col.vo, torch.cat([wo[:, r] @ wv[r] for r in rows]),
               torch.cat([wo[:, r] @ bv[r] + bo / heads for r in rows]))
    x = torch.randn(2, 9, d)
    with torch.no_grad():
        torch.testing.assert_close(col(x), std(x), rtol=1e-4, atol=1e-5)


def test_collapsed_qk_vo_without_value_output_averages_heads() -> None:
    torch.manual_seed(0)
    attn = CollapsedQKVOAttention(8, 2, REAL, causal=True, dropout=0.0, value_output="none")
    x = torch.randn(1, 5, 8)
    out = attn(x)
    assert out.shape == (1, 5, 8)
    torch.testing.assert_close(out[:, 0], x[:, 0])  # the first token attends only to itself
