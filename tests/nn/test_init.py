"""The materialized W gets the variance of a dense layer of the same shape."""

from __future__ import annotations

import pytest
import torch

from phmscale.nn import PHMConv2d, PHMLinear, target_variance


@pytest.mark.parametrize(("algebra", "n"), [("phm", 2), ("phm", 4), ("phm", 8), ("phm", 16),
                                            ("quaternion", None), ("m3r", None), ("m2c", None),
                                            ("sedenion", None), ("real", None)])
@pytest.mark.parametrize("mode", ["kaiming", "xavier"])
def test_linear_weight_variance_matches_dense_target(algebra: str, n: int | None,
                                                     mode: str) -> None:
    torch.manual_seed(0)
    inn, out = 576, 288  # divisible by 1, 2, 4, 8, 9, 16
    layer = PHMLinear(inn, out, n, algebra, init=mode)
    target = target_variance(inn, out, mode)
    assert target == (1 / (3 * inn) if mode == "kaiming" else 2 / (inn + out))
    ratio = float(layer.weight.detach().var()) / target
    assert 0.9 < ratio < 1.1, ratio
    assert abs(float(layer.weight.detach().mean())) < 0.05 * target**0.5


def test_dense_reference_has_the_target_variance() -> None:
    torch.manual_seed(0)
    dense = torch.nn.Linear(576, 288)
    assert 0.95 < float(dense.weight.detach().var()) * 3 * 576 < 1.05


@pytest.mark.parametrize(("algebra", "n"), [("phm", 4), ("quaternion", None), ("m2r", None)])
def test_conv_weight_variance_matches_dense_target(algebra: str, n: int | None) -> None:
    torch.manual_seed(1)
    layer = PHMConv2d(64, 64, 3, n, algebra)
    ratio = float(layer.weight.detach().var()) / target_variance(64 * 9, 64 * 9)
    assert 0.9 < ratio < 1.1, ratio


def test_learned_rules_are_normalized() -> None:
    torch.manual_seed(2)
    layer = PHMLinear(8, 8, n=2)
    assert abs(float(layer.A.detach().pow(2).sum(0).mean()) - 1.0) < 1e-6  # ρ = 1, as ℂ, ℍ, 𝕆
