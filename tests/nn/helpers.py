"""Independent references for tests/nn: a Python loop of torch.kron, like public PHM code."""

from __future__ import annotations

import torch
from torch import Tensor


def kron_loop(A: Tensor, S: Tensor) -> Tensor:
    """Σᵢ kron(Aᵢ, Sᵢ) over the first two axes of S (n, p, q, *kernel), one kron per rule."""
    extra = S.dim() - 3
    total = None
    for i in range(A.shape[0]):
        rule = A[i].reshape(*A[i].shape, *([1] * extra))  # (n, n, 1, …): kron leaves kernel axes
        term = torch.kron(rule, S[i])
        total = term if total is None else total + term
    return total


def assert_close(actual: Tensor, expected: Tensor) -> None:
    """float64 to 1e-10, float32 to 1e-5, relative to the largest entry."""
    tol = 1e-10 if expected.dtype == torch.float64 else 1e-5
    scale = expected.abs().max().clamp_min(1e-30)
    err = float((actual - expected).detach().abs().max() / scale.detach())
    assert err <= tol, f"relative error {err:.3g} > {tol}"
