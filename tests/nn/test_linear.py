"""PHMLinear: output = the reference x Wᵀ + b for every algorithm, with and without the eval
cache; numerical gradients; parameter counts; the contract's attributes. (Every functional
kernel against the reference, forward and backward: test_kernels.py.)"""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

from phmscale.nn import ALGEBRA_DIMS, PHMLinear
from phmscale.nn.functional import phm_linear, phm_weight, reference_weight
from tests.nn.helpers import assert_close

CASES = [("phm", 1), ("phm", 2), ("phm", 3), ("phm", 4), ("quaternion", None), ("m3r", None),
         ("sedenion", None)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("algebra", "n"), CASES)
def test_output_matches_the_reference_for_every_algorithm(algebra: str, n: int | None,
                                                          dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    dim = n or ALGEBRA_DIMS[algebra]
    layer = PHMLinear(3 * dim, 2 * dim, n, algebra, dtype=dtype)
    x = torch.randn(4, 5, 3 * dim, dtype=dtype)  # any leading shape
    W = reference_weight(layer.A, layer.S)
    assert_close(layer.weight, W)
    expected = x @ W.T + layer.bias
    for algorithm in ("auto", "materialize", "structured"):
        layer.algorithm = algorithm
        assert_close(layer(x), expected)
    layer.eval()
    with torch.no_grad():
        for _ in range(2):  # second call reads the cached W
            layer.algorithm = "materialize"
            assert_close(layer(x), expected)
            layer.algorithm = "structured"
            assert_close(layer(x), expected)


@pytest.mark.parametrize("algorithm", ["materialize", "structured"])
def test_gradcheck_linear(algorithm: str) -> None:
    torch.manual_seed(2)
    n, p, q = 2, 3, 2
    args = (
        torch.randn(3, n * q, dtype=torch.float64, requires_grad=True),
        torch.randn(n, n, n, dtype=torch.float64, requires_grad=True),
        torch.randn(n, p, q, dtype=torch.float64, requires_grad=True),
        torch.randn(n * p, dtype=torch.float64, requires_grad=True),
    )
    assert gradcheck(lambda x, A, S, b: phm_linear(x, A, S, b, algorithm), args)


@pytest.mark.parametrize(("algebra", "n"), [("phm", 4), ("phm", 1), ("quaternion", None),
                                             ("m2c", None), ("octonion", 8)])
@pytest.mark.parametrize("bias", [True, False])
def test_parameter_count(algebra: str, n: int | None, bias: bool) -> None:
    dim = n or ALGEBRA_DIMS[algebra]
    inn, out = 8 * dim, 4 * dim
    layer = PHMLinear(inn, out, n, algebra, bias)
    rules = dim**3 if algebra == "phm" else 0
    assert sum(p.numel() for p in layer.parameters()) == rules + out * inn // dim + bias * out


def test_contract_attributes_and_state_dict() -> None:
    learned = PHMLinear(8, 12, n=4)
    assert isinstance(learned.A, torch.nn.Parameter) and learned.A.shape == (4, 4, 4)
    assert learned.S.shape == (4, 3, 2)
    assert learned.weight.shape == (12, 8)
    assert set(learned.state_dict()) == {"A", "S", "bias"}
    fixed = PHMLinear(8, 12, algebra="quaternion")
    assert not isinstance(fixed.A, torch.nn.Parameter)
    assert "A" in dict(fixed.named_buffers())
    assert set(fixed.state_dict()) == {"S", "bias"}  # rules are a non-persistent buffer
    assert fixed.A.dtype == fixed.S.dtype
    moved = fixed.to(torch.float64)
    assert moved.A.dtype == torch.float64
    with pytest.raises(RuntimeError, match="Unexpected key"):
        fixed.load_state_dict(PHMLinear(8, 12, n=4).state_dict())


def test_bias_init_like_nn_linear() -> None:
    torch.manual_seed(4)
    layer = PHMLinear(64, 4096, n=4)
    bound = 64**-0.5
    assert layer.bias.abs().max() <= bound
    assert layer.bias.abs().max() > 0.95 * bound


def test_layers_build_and_run_on_the_meta_device() -> None:
    """Shapes only (FLOP counting): init must not read values; the algebra tables stay real."""
    from phmscale.nn import PHMConv2d, structure_constants

    with torch.device("meta"):
        linear = PHMLinear(16, 8, n=4)
        conv = PHMConv2d(8, 8, 3, algebra="m2c")
        assert linear(torch.empty(3, 16)).shape == (3, 8)
    assert conv.A.is_meta and linear.S.is_meta
    assert not structure_constants("m2c").is_meta


def test_gradcheck_weight_builder_with_fixed_rules_and_kernel_axes() -> None:
    from phmscale.nn import algebra_rules

    torch.manual_seed(5)
    A = algebra_rules("quaternion", torch.float64)  # a buffer: no grad wanted
    S = torch.randn(4, 2, 1, 2, 3, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda s: phm_weight(A, s), (S,))
    assert_close(phm_weight(A, S), reference_weight(A, S))
