"""PHMLinear: output = x Wᵀ + b = the explicit Σ kron; both algorithms and the cache agree;
gradients; parameter counts; the contract's attributes."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

from phmscale.nn import ALGEBRA_DIMS, PHMLinear
from phmscale.nn.functional import (
    choose_algorithm,
    materialize_linear,
    pack_structured,
    packed_structured_linear,
    phm_linear,
    phm_weight,
    structured_linear,
)
from tests.nn.helpers import assert_close, kron_loop

CASES = [("phm", 1), ("phm", 2), ("phm", 3), ("phm", 4), ("quaternion", None), ("m3r", None),
         ("sedenion", None)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("algebra", "n"), CASES)
def test_output_matches_kron_loop_for_every_algorithm(algebra: str, n: int | None,
                                                      dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    dim = n or ALGEBRA_DIMS[algebra]
    layer = PHMLinear(3 * dim, 2 * dim, n, algebra, dtype=dtype)
    x = torch.randn(4, 5, 3 * dim, dtype=dtype)  # any leading shape
    W = kron_loop(layer.A, layer.S)
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


def test_functional_algorithms_agree_on_wide_shapes() -> None:
    torch.manual_seed(1)
    n, p, q = 4, 8, 16
    A = torch.randn(n, n, n, dtype=torch.float64)
    S = torch.randn(n, p, q, dtype=torch.float64)
    b = torch.randn(n * p, dtype=torch.float64)
    x = torch.randn(2, 3, n * q, dtype=torch.float64)
    expected = x @ kron_loop(A, S).T + b
    assert_close(materialize_linear(x, A, S, b), expected)
    assert_close(structured_linear(x, A, S, b), expected)
    assert_close(packed_structured_linear(x, *pack_structured(A, S), b), expected)
    assert_close(phm_linear(x, A, S, b, "auto"), expected)
    assert_close(phm_weight(A, S), kron_loop(A, S))


def test_dispatcher_picks_structured_only_for_few_rows() -> None:
    assert choose_algorithm(1, 4, 4096) == "structured"
    assert choose_algorithm(8, 16, 4096, weight_cached=True) == "structured"
    assert choose_algorithm(32, 16, 4096, weight_cached=False) == "structured"
    assert choose_algorithm(64, 16, 4096, weight_cached=True) == "materialize"
    assert choose_algorithm(2048, 4, 1024) == "materialize"
    assert choose_algorithm(1, 1, 4096) == "materialize"  # n = 1 is a dense layer


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


def test_gradients_of_both_algorithms_agree() -> None:
    torch.manual_seed(3)
    layer = PHMLinear(12, 8, n=4, dtype=torch.float64)
    x = torch.randn(5, 12, dtype=torch.float64)
    grads = []
    for algorithm in ("materialize", "structured"):
        layer.zero_grad()
        layer.algorithm = algorithm
        layer(x).pow(2).sum().backward()
        grads.append([p.grad.clone() for p in layer.parameters()])
    for g1, g2 in zip(*grads, strict=True):
        assert_close(g1, g2)


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
    assert_close(phm_weight(A, S), kron_loop(A, S))
