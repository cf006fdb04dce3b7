"""PHMConv1d/2d/3d: kernel = the reference Σ kron over the channel axes; output = F.convNd with
that kernel, with and without the eval cache; numerical gradients; parameter counts with groups.
(phm_conv's autograd gradients against the reference: test_kernels.py.)"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from phmscale.nn import PHMConv1d, PHMConv2d, PHMConv3d
from phmscale.nn.functional import phm_conv, reference_weight
from tests.nn.helpers import assert_close

CONVS = [
    (PHMConv1d, F.conv1d, (9,)),
    (PHMConv2d, F.conv2d, (7, 6)),
    (PHMConv3d, F.conv3d, (5, 4, 4)),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("cls", "conv", "spatial"), CONVS)
@pytest.mark.parametrize(("algebra", "n", "groups"), [("phm", 2, 1), ("phm", 2, 2),
                                                       ("quaternion", None, 1)])
def test_conv_matches_dense_conv_with_kron_kernel(cls, conv, spatial, algebra, n, groups,
                                                  dtype) -> None:
    torch.manual_seed(0)
    layer = cls(16, 8, 3, n, algebra, stride=2, padding=1, dilation=1, groups=groups, dtype=dtype)
    W = reference_weight(layer.A, layer.S)
    assert W.shape == (8, 16 // groups, *([3] * len(spatial)))
    assert_close(layer.weight, W)
    x = torch.randn(2, 16, *spatial, dtype=dtype)
    expected = conv(x, W, layer.bias, 2, 1, 1, groups)
    assert_close(layer(x), expected)
    layer.eval()
    with torch.no_grad():
        assert_close(layer(x), expected)
        assert_close(layer(x), expected)  # cached kernel


def test_conv_string_padding_and_tuple_kernel() -> None:
    layer = PHMConv2d(8, 8, (3, 1), n=4, padding="same", bias=False)
    x = torch.randn(1, 8, 5, 5)
    assert layer(x).shape == (1, 8, 5, 5)
    assert layer.S.shape == (4, 2, 2, 3, 1)


def test_gradcheck_conv() -> None:
    torch.manual_seed(1)
    n, p, q = 2, 2, 1
    args = (
        torch.randn(2, n * q, 5, 4, dtype=torch.float64, requires_grad=True),
        torch.randn(n, n, n, dtype=torch.float64, requires_grad=True),
        torch.randn(n, p, q, 2, 3, dtype=torch.float64, requires_grad=True),
        torch.randn(n * p, dtype=torch.float64, requires_grad=True),
    )

    def fn(x, A, S, b):
        return phm_conv(x, A, S, b, (1, 1), (1, 0), (1, 1), 1)

    # fast mode (random projections of the Jacobian) here: the full one takes ~15 s on 2 cores
    assert gradcheck(fn, args, fast_mode=True)


def test_gradcheck_conv1d_full_jacobian() -> None:
    torch.manual_seed(2)
    n = 2
    args = (
        torch.randn(1, n, 4, dtype=torch.float64, requires_grad=True),
        torch.randn(n, n, n, dtype=torch.float64, requires_grad=True),
        torch.randn(n, 1, 1, 2, dtype=torch.float64, requires_grad=True),
        torch.randn(n, dtype=torch.float64, requires_grad=True),
    )
    assert gradcheck(lambda x, A, S, b: phm_conv(x, A, S, b, (1,), (0,), (1,), 1), args)


@pytest.mark.parametrize(("algebra", "n", "groups"), [("phm", 4, 1), ("phm", 4, 2),
                                                       ("m2r", None, 1), ("octonion", None, 2)])
def test_conv_parameter_count(algebra: str, n: int | None, groups: int) -> None:
    layer = PHMConv2d(32, 16, 3, n, algebra, groups=groups)
    dim = layer.n
    rules = dim**3 if algebra == "phm" else 0
    assert sum(p.numel() for p in layer.parameters()) == rules + 16 * 32 * 9 // (dim * groups) + 16
