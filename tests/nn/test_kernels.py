"""Every kernel of a PHM layer against the reference (functional.reference_weight /
reference_linear: a loop of torch.kron, then F.linear or F.convNd), forward and backward: the
gradients of x, A, S and the bias must equal the reference's under autograd."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from phmscale.nn import PHMConv1d, PHMConv2d, PHMConv3d, PHMLinear
from phmscale.nn.functional import (
    materialize_linear,
    pack_structured,
    packed_structured_linear,
    phm_conv,
    phm_linear,
    phm_weight,
    reference_linear,
    reference_weight,
    structured_linear,
)
from phmscale.nn.kron import KronSum, KronSumGemm, kron_sum
from tests.nn.helpers import assert_close, assert_matches_reference

F64 = torch.float64
# (n, p, q, kernel): S (n, p, q, *kernel) → W (n·p, n·q, *kernel)
WEIGHT_SHAPES = [(1, 3, 2, ()), (2, 3, 2, ()), (3, 1, 2, ()), (4, 2, 3, ()), (16, 2, 1, ()),
                 (4, 2, 1, (3,)), (3, 1, 2, (2, 2)), (2, 2, 1, (2, 1, 2))]
WEIGHT_KERNELS = {"KronSum": KronSum.apply, "KronSumGemm": KronSumGemm.apply,
                  "kron_sum": kron_sum, "phm_weight": phm_weight}


def _packed(x, A, S, b):
    return packed_structured_linear(x, *pack_structured(A, S), b)


LINEAR_KERNELS = {
    "materialize_linear": materialize_linear,
    "structured_linear": structured_linear,
    "packed_structured_linear": _packed,
    "phm_linear[auto]": lambda x, A, S, b: phm_linear(x, A, S, b, "auto"),
    "phm_linear[materialize]": lambda x, A, S, b: phm_linear(x, A, S, b, "materialize"),
    "phm_linear[structured]": lambda x, A, S, b: phm_linear(x, A, S, b, "structured"),
}


def _leaves(*shapes: tuple[int, ...], dtype: torch.dtype = F64) -> list[torch.Tensor]:
    return [torch.randn(*s, dtype=dtype, requires_grad=True) for s in shapes]


def test_reference_is_the_definition() -> None:
    """W[k·p + a, j·q + b, *z] = Σᵢ A[i, k, j]·S[i, a, b, *z], here by einsum, and plain kron
    for n = 1 (W = A₀·S₀)."""
    torch.manual_seed(0)
    for n, p, q, kernel in WEIGHT_SHAPES:
        A, S = torch.randn(n, n, n, dtype=F64), torch.randn(n, p, q, *kernel, dtype=F64)
        by_index = torch.einsum("ikj,iab...->kajb...", A, S).reshape(n * p, n * q, *kernel)
        assert_close(reference_weight(A, S), by_index)
    A, S = torch.randn(1, 1, 1, dtype=F64), torch.randn(1, 3, 2, dtype=F64)
    assert_close(reference_weight(A, S), A[0, 0, 0] * S[0])
    x, b = torch.randn(4, 2, dtype=F64), torch.randn(3, dtype=F64)
    assert_close(reference_linear(x, A, S, b), x @ (A[0, 0, 0] * S[0]).T + b)


@pytest.mark.parametrize("name", list(WEIGHT_KERNELS))
@pytest.mark.parametrize(("n", "p", "q", "kernel"), WEIGHT_SHAPES)
def test_weight_builders_match_the_reference(name: str, n: int, p: int, q: int,
                                              kernel: tuple[int, ...]) -> None:
    torch.manual_seed(n * 10 + p)
    A, S = _leaves((n, n, n), (n, p, q, *kernel))
    assert_matches_reference(WEIGHT_KERNELS[name], reference_weight, [A, S])


@pytest.mark.parametrize("name", list(LINEAR_KERNELS))
@pytest.mark.parametrize(("n", "p", "q"), [(1, 3, 4), (2, 8, 16), (3, 2, 5), (4, 16, 8),
                                           (8, 3, 5), (16, 4, 4)])
@pytest.mark.parametrize("lead", [(1,), (3,), (2, 3)])
def test_linear_kernels_match_the_reference(name: str, n: int, p: int, q: int,
                                            lead: tuple[int, ...]) -> None:
    torch.manual_seed(n * 100 + p)
    x, A, S, b = _leaves((*lead, n * q), (n, n, n), (n, p, q), (n * p,))
    assert_matches_reference(LINEAR_KERNELS[name], reference_linear, [x, A, S, b])


@pytest.mark.parametrize("name", ["structured_linear", "packed_structured_linear",
                                  "materialize_linear"])
def test_linear_kernels_without_bias_and_in_float32(name: str) -> None:
    torch.manual_seed(1)
    n, p, q = 4, 6, 5
    x, A, S = _leaves((2, 3, n * q), (n, n, n), (n, p, q), dtype=torch.float32)
    kernel = LINEAR_KERNELS[name]
    assert_matches_reference(lambda x, A, S: kernel(x, A, S, None), reference_linear, [x, A, S])


CONVS = [(F.conv1d, (9,), (3,)), (F.conv2d, (7, 6), (3, 2)), (F.conv3d, (5, 4, 4), (2, 1, 3))]


@pytest.mark.parametrize(("conv", "spatial", "kernel"), CONVS)
@pytest.mark.parametrize(("n", "groups"), [(2, 1), (2, 2), (4, 1)])
def test_conv_kernel_matches_the_reference(conv, spatial: tuple[int, ...],
                                           kernel: tuple[int, ...], n: int, groups: int) -> None:
    torch.manual_seed(n + groups)
    cin, cout = 4 * n, 2 * n * groups
    d = len(spatial)
    x, A, S, b = _leaves((2, cin, *spatial), (n, n, n), (n, cout // n, cin // (n * groups),
                                                          *kernel), (cout,))
    geometry = ((2,) * d, (1,) * d, (1,) * d, groups)  # stride, padding, dilation, groups
    assert_matches_reference(
        lambda x, A, S, b: phm_conv(x, A, S, b, *geometry),
        lambda x, A, S, b: conv(x, reference_weight(A, S), b, *geometry),
        [x, A, S, b])


@pytest.mark.parametrize("algorithm", ["auto", "materialize", "structured"])
@pytest.mark.parametrize(("algebra", "n"), [("phm", 4), ("quaternion", None)])
def test_linear_layer_matches_the_reference_in_training(algorithm: str, algebra: str,
                                                        n: int | None) -> None:
    """The layer's own forward (training mode, grad on): grads of x, A (learned rules only),
    S and bias, through the pruning mask too."""
    torch.manual_seed(2)
    layer = PHMLinear(12, 8, n, algebra, algorithm=algorithm, dtype=F64)
    layer.mask = torch.rand(layer.S.shape[1:]) > 0.3
    x = torch.randn(5, 12, dtype=F64, requires_grad=True)
    inputs = [x, *(p for p in (layer.A, layer.S, layer.bias) if p.requires_grad)]
    assert_matches_reference(
        lambda *_: layer(x),
        lambda *_: reference_linear(x, layer.A, layer.S * layer.mask, layer.bias), inputs)


@pytest.mark.parametrize(("cls", "spatial"), [(PHMConv1d, (6,)), (PHMConv2d, (5, 4)),
                                              (PHMConv3d, (3, 4, 3))])
def test_conv_layer_matches_the_reference_in_training(cls, spatial: tuple[int, ...]) -> None:
    torch.manual_seed(3)
    layer = cls(8, 4, 2, n=2, stride=1, padding=1, dtype=F64)
    conv = (F.conv1d, F.conv2d, F.conv3d)[len(spatial) - 1]
    x = torch.randn(2, 8, *spatial, dtype=F64, requires_grad=True)
    assert_matches_reference(
        lambda *_: layer(x),
        lambda *_: conv(x, reference_weight(layer.A, layer.S), layer.bias, layer.stride,
                        layer.padding, layer.dilation, layer.groups),
        [x, layer.A, layer.S, layer.bias])
