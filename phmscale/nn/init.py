"""Initialization that gives the materialized W = Σᵢ Aᵢ ⊗ Sᵢ the variance of a dense layer.

Derivation. W[k·p + a, j·q + b] = Σᵢ A[i,k,j]·S[i,a,b] with S i.i.d., zero mean, independent of
A. Every entry of block (k, j) therefore has

    Var(W) = Var(S) · Σᵢ A[i,k,j]²          (only the rules that hit block (k, j) contribute)

and averaged over the n² blocks, Var(W) = Var(S)·ρ with ρ = mean_{k,j} Σᵢ A[i,k,j]². Setting
Var(S) = target/ρ gives W the dense target variance:

- Cayley–Dickson algebras (ℂ, ℍ, 𝕆, sedenions; real): every block gets exactly one ±1 rule,
  ρ = 1, Var(S) = target.
- M_k(ℝ), M₂(ℂ): E_ab·E_cd vanishes unless b = c, so only 1/k of the blocks are non-zero
  (ρ = 1/2 for M₂(ℝ) and M₂(ℂ), 1/3 for M₃(ℝ), 1/4 for M₄(ℝ)) and Var(S) = k·target. The same
  factor keeps a forward pass variance-preserving: each output sums in/k non-zero inputs.
- learned rules (`phm`): A is drawn i.i.d. N(0, 1) and rescaled so that ρ = 1 exactly, the
  value of every Cayley–Dickson algebra; then Var(S) = target, whatever n. (Rescaling the draw
  instead of relying on E[ρ] = 1 matters at small n: ρ averages n³ squares, only 8 at n = 2,
  so an unnormalized draw would miss the target by ±50%.)

Targets, as torch's dense defaults: Kaiming-uniform with a = √5 (nn.Linear, nn.ConvNd) gives
bound = gain·√(3/fan_in) with gain = √(2/(1+a²)) = √(1/3), i.e. Var = 1/(3·fan_in); Xavier
gives Var = 2/(fan_in + fan_out). S is drawn uniform with that variance (bound √(3·Var(S))).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

InitMode = Literal["kaiming", "xavier"]
INIT_MODES: tuple[str, ...] = ("kaiming", "xavier")


def target_variance(fan_in: int, fan_out: int, mode: str = "kaiming") -> float:
    """Variance of a dense weight under torch's default init (kaiming) or Xavier."""
    if mode == "kaiming":
        return 1.0 / (3.0 * fan_in)
    if mode == "xavier":
        return 2.0 / (fan_in + fan_out)
    raise ValueError(f"init={mode!r} is unknown: use one of {', '.join(INIT_MODES)}")


def rule_density(A: Tensor) -> float:
    """ρ = mean over the n² blocks (k, j) of Σᵢ A[i,k,j]²: how much rule mass feeds a block."""
    return float(A.detach().double().pow(2).sum(0).mean())


@torch.no_grad()
def init_rules_(A: Tensor) -> Tensor:
    """Learned rules: N(0, 1) entries, rescaled in place so that rule_density(A) == 1."""
    A.normal_()
    if A.is_meta:  # shapes only (e.g. FLOP counting): there are no values to normalize
        return A
    A.mul_(1.0 / math.sqrt(max(rule_density(A), 1e-12)))
    return A


@torch.no_grad()
def init_phm_(A: Tensor, S: Tensor, fan_in: int, fan_out: int, mode: str = "kaiming",
              learned: bool = True) -> None:
    """Initialize A (if learned) and S in place so that Var(W) hits the dense target."""
    variance = target_variance(fan_in, fan_out, mode)
    if learned:
        init_rules_(A)
    density = 1.0 if A.is_meta else rule_density(A)
    bound = math.sqrt(3.0 * variance / density)
    S.uniform_(-bound, bound)


@torch.no_grad()
def init_bias_(bias: Tensor, fan_in: int) -> None:
    """As nn.Linear / nn.ConvNd: U(−1/√fan_in, 1/√fan_in)."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    bias.uniform_(-bound, bound)
