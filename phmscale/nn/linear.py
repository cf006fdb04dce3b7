"""PHMLinear: a linear layer whose weight is W = Σᵢ Aᵢ ⊗ Sᵢ (Zhang et al., ICLR 2021), with
learned rules (`phm`, any n) or a fixed algebra's rules (AlgebraNets)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from phmscale.nn.base import PHMBase
from phmscale.nn.functional import (
    check_algorithm,
    choose_algorithm,
    packed_structured_linear,
    rules_first,
    structured_linear,
)


class PHMLinear(PHMBase):
    """y = x Wᵀ + b with W = Σᵢ kron(Aᵢ, Sᵢ) of shape (out_features, in_features).

    Args:
        in_features, out_features: sizes of the dense equivalent; both divisible by n.
        n: algebra dimension; required for `phm`, optional (must agree) for a fixed algebra.
        algebra: `phm` (learned rules A) or a fixed algebra (phmscale.nn.ALGEBRA_DIMS).
        bias: add a learned bias of out_features.
        algorithm: `auto` (by row count), `materialize` or `structured`
            (phmscale.nn.functional explains both); settable later as an attribute.
        init: `kaiming` (torch's nn.Linear default variance) or `xavier`, for W.
        cache_weight: reuse the materialized W in eval mode under no_grad.

    Parameters: n³ (learned A only) + out·in/n (S) + out (bias). The input's n components are n
    contiguous blocks of the last axis: x (..., n·in/n) → y (..., n·out/n).
    """

    def __init__(self, in_features: int, out_features: int, n: int | None = None,
                 algebra: str = "phm", bias: bool = True, *, algorithm: str = "auto",
                 init: str = "kaiming", cache_weight: bool = True, device: Any = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__(in_features, out_features, n, algebra, bias, init=init,
                         cache_weight=cache_weight, device=device, dtype=dtype)
        self.in_features = in_features
        self.out_features = out_features
        self.algorithm = algorithm

    @property
    def algorithm(self) -> str:
        """`auto`, `materialize` or `structured`; checked on assignment."""
        return self._algorithm

    @algorithm.setter
    def algorithm(self, value: str) -> None:
        self._algorithm = check_algorithm(value)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"input has {x.shape[-1]} features in its last axis, expected "
                f"in_features={self.in_features}"
            )
        algorithm = self.algorithm
        cached = self._use_cache()
        rows = x.numel() // self.in_features
        if algorithm == "auto":
            algorithm = choose_algorithm(rows, self.n, self.in_features, cached)
        if algorithm == "structured":
            if not cached:  # S may change every call: S first, which needs no copy of S
                return structured_linear(x, self.A, self.effective_S(), self.bias)
            if rules_first(rows, self.n):  # against a cached side-by-side S
                mix, s_cat = self.packed_operands()
                return packed_structured_linear(x, mix, s_cat, self.bias)
            return structured_linear(x, self.A, self._eval_S(), self.bias)
        return F.linear(x, self.dense_weight(), self.bias)

    def _eval_S(self) -> Tensor:
        """S as is, or the masked S cached like W (pruned layers would mask on every call)."""
        if self.mask is None:
            return self.S
        return self._cache.get("S", (self.A, self.S, self.mask), self.effective_S)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"{self._describe()}, bias={self.bias is not None}"
        )
