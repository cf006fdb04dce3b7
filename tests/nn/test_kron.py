"""Both builders of W = Σᵢ kron(Aᵢ, Sᵢ) (kron.py) against torch.kron, and their gradients."""

import pytest
import torch

from phmscale.nn import kron


def _reference(A: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    """Σᵢ kron(Aᵢ, Sᵢ) by torch.kron, one kernel tap at a time."""
    n, p, q = S.shape[:3]
    flat = S.reshape(n, p, q, -1)  # (n, p, q, taps)
    taps = [sum(torch.kron(A[i], flat[i, :, :, t]) for i in range(n))
            for t in range(flat.shape[3])]
    return torch.stack(taps, -1).reshape(n * p, n * q, *S.shape[3:])


@pytest.mark.parametrize("fn", [kron.KronSum.apply, kron.KronSumGemm.apply],
                         ids=["loops", "gemm"])
@pytest.mark.parametrize("n,p,q,kernel", [(2, 3, 2, ()), (4, 2, 3, ()), (4, 2, 1, (3,)),
                                          (3, 1, 2, (2, 2))])
def test_builders_match_kron_and_gradcheck(fn, n, p, q, kernel):
    torch.manual_seed(0)
    A = torch.randn(n, n, n, dtype=torch.float64, requires_grad=True)
    S = torch.randn(n, p, q, *kernel, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(fn(A, S), _reference(A, S), rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(fn, (A, S))


def test_dispatch_by_n_and_size():
    small = torch.randn(4, 8, 8)
    assert kron.kron_sum(torch.randn(4, 4, 4), small).shape == (32, 32)
    # n = 2 and W over GEMM_MAX_BYTES take the loops; the result is the same either way
    A2, S2 = torch.randn(2, 2, 2), torch.randn(2, 5, 5)
    torch.testing.assert_close(kron.kron_sum(A2, S2), kron.KronSumGemm.apply(A2, S2))
