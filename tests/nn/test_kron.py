"""kron.py's two builders of W = Σᵢ kron(Aᵢ, Sᵢ): their hand-written backward passes against
numerical gradients (test_kernels.py holds their values and autograd gradients to the
reference; test_dispatch.py pins which one a W takes)."""

import pytest
import torch

from phmscale.nn import kron


@pytest.mark.parametrize("fn", [kron.KronSum.apply, kron.KronSumGemm.apply],
                         ids=["loops", "gemm"])
@pytest.mark.parametrize("n,p,q,kernel", [(2, 3, 2, ()), (4, 2, 3, ()), (4, 2, 1, (3,)),
                                          (3, 1, 2, (2, 2))])
def test_builders_gradcheck(fn, n, p, q, kernel):
    torch.manual_seed(0)
    A = torch.randn(n, n, n, dtype=torch.float64, requires_grad=True)
    S = torch.randn(n, p, q, *kernel, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (A, S))


@pytest.mark.parametrize("fn", [kron.KronSum.apply, kron.KronSumGemm.apply],
                         ids=["loops", "gemm"])
def test_builders_skip_gradients_not_asked_for(fn):
    A = torch.randn(4, 4, 4, dtype=torch.float64)
    S = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    fn(A, S).sum().backward()
    assert A.grad is None and S.grad is not None
