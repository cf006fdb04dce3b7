"""Bad arguments raise ValueError naming the argument and the fix."""

from __future__ import annotations

import pytest
import torch

from phmscale.nn import PHMConv2d, PHMLinear, algebra_dim, from_dense, prune_elements


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (lambda: PHMLinear(30, 8, n=4),
         r"in_features=30 is not divisible by n=4: use a multiple of 4"),
        (lambda: PHMLinear(8, 30, n=4), r"out_features=30 .*multiple of 4"),
        (lambda: PHMLinear(8, 8, algebra="quaterion"), r"algebra='quaterion'.*'quaternion'"),
        (lambda: PHMLinear(8, 8, n=4, algebra="octonion"), r"n=4 .*octonion.*n=8"),
        (lambda: PHMLinear(8, 8), r"n is required for algebra='phm'"),
        (lambda: PHMLinear(8, 8, n=0), r"n=0"),
        (lambda: PHMLinear(8, 8, n=4, algorithm="fast"), r"algorithm='fast'"),
        (lambda: PHMLinear(8, 8, n=4, init="he"), r"init='he'"),
        (lambda: PHMLinear(0, 8, n=4), r"in_features=0"),
        (lambda: PHMConv2d(12, 8, 3, n=4, groups=2), r"in_channels=12 .*n\*groups=8"),
        (lambda: PHMConv2d(8, 6, 3, n=2, groups=4), r"out_channels=6 .*groups=4"),
        (lambda: PHMConv2d(8, 8, 3, n=4, padding="full"), r"padding='full'"),
        (lambda: algebra_dim("phm"), r"algebra='phm'"),
        (lambda: from_dense(torch.nn.Linear(10, 8), 4), r"in_features=10"),
        (lambda: from_dense(torch.nn.ReLU(), 4), r"ReLU"),
        (lambda: prune_elements(PHMLinear(8, 8, n=4), 1.5), r"sparsity=1.5"),
        (lambda: prune_elements(PHMLinear(8, 8, n=4), 0.5, scope="net"), r"scope='net'"),
    ],
)
def test_bad_arguments_raise_value_error(make, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        make()


def test_setting_a_bad_algorithm_later_raises() -> None:
    layer = PHMLinear(8, 8, n=4)
    with pytest.raises(ValueError, match="algorithm='gemm'"):
        layer.algorithm = "gemm"


def test_wrong_input_width_is_an_error_not_a_silent_reshape() -> None:
    layer = PHMLinear(16, 8, n=4, algorithm="structured")
    with pytest.raises(ValueError, match="in_features=16"):
        layer(torch.randn(2, 8))  # 16 numbers would reshape into one row of 16
