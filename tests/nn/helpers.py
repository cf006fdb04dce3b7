"""Shared checks for tests/nn: closeness, and a kernel against the reference forward and backward.

The reference itself is the package's `phmscale.nn.functional.reference_weight` /
`reference_linear` (a plain loop of torch.kron, then F.linear); test_kernels.py holds it to the
index formula of the definition."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor


def assert_close(actual: Tensor, expected: Tensor) -> None:
    """float64 to 1e-10, float32 to 1e-5, relative to the largest entry."""
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    tol = 1e-10 if expected.dtype == torch.float64 else 1e-5
    scale = expected.abs().max().clamp_min(1e-30)
    err = float((actual - expected).detach().abs().max() / scale.detach())
    assert err <= tol, f"relative error {err:.3g} > {tol}"


def assert_matches_reference(kernel: Callable[..., Tensor], reference: Callable[..., Tensor],
                             inputs: Sequence[Tensor]) -> None:
    """kernel(*inputs) equals reference(*inputs), and so do the gradients of every input that
    requires grad, for one random upstream gradient."""
    out, expected = kernel(*inputs), reference(*inputs)
    assert_close(out, expected)
    wrt = [t for t in inputs if t.requires_grad]
    if not wrt:
        return
    grad_out = torch.randn_like(expected)
    got = torch.autograd.grad(out, wrt, grad_out)
    want = torch.autograd.grad(expected, wrt, grad_out)
    for g, w in zip(got, want, strict=True):
        assert_close(g, w)
