"""Dense ↔ PHM conversion: exact on Kronecker sums, monotone in the number of terms, round trips."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from phmscale.nn import (
    PHMConv2d,
    PHMLinear,
    convert_model,
    from_dense,
    kronecker_fit,
    to_dense,
)
from phmscale.nn.functional import reference_weight
from tests.nn.helpers import assert_close


@pytest.mark.parametrize(("algebra", "n"), [("phm", 2), ("phm", 4), ("quaternion", None),
                                            ("m2c", None)])
def test_from_dense_is_exact_on_kronecker_sums(algebra: str, n: int | None) -> None:
    torch.manual_seed(0)
    source = PHMLinear(16, 24, n, algebra, dtype=torch.float64)
    dense = nn.Linear(16, 24, dtype=torch.float64)
    with torch.no_grad():
        dense.weight.copy_(reference_weight(source.A, source.S))
    phm = from_dense(dense, n, algebra)
    assert isinstance(phm, PHMLinear) and phm.algebra == algebra
    assert_close(phm.weight, dense.weight)
    x = torch.randn(5, 16, dtype=torch.float64)
    assert_close(phm(x), dense(x))


def test_from_dense_conv_is_exact_and_keeps_geometry() -> None:
    torch.manual_seed(1)
    source = PHMConv2d(8, 12, 3, n=4, groups=2, dtype=torch.float64)
    dense = nn.Conv2d(8, 12, 3, stride=2, padding=1, groups=2, dtype=torch.float64)
    with torch.no_grad():
        dense.weight.copy_(source.weight)
    phm = from_dense(dense, 4)
    assert (phm.stride, phm.padding, phm.groups) == ((2, 2), (1, 1), 2)
    x = torch.randn(2, 8, 7, 7, dtype=torch.float64)
    assert_close(phm(x), dense(x))


def test_fit_error_falls_with_the_number_of_terms() -> None:
    torch.manual_seed(2)
    weight = torch.randn(64, 48, dtype=torch.float64)
    n = 4
    errors = [kronecker_fit(weight, n, terms=r).rel_error for r in range(1, n * n + 1)]
    assert all(a > b for a, b in itertools.pairwise(errors))
    assert errors[-1] < 1e-12  # n² terms span every W
    fit = kronecker_fit(weight, n, terms=6)
    W = reference_weight(fit.A, fit.S)
    assert math.isclose(float((weight - W).norm() / weight.norm()), fit.rel_error, rel_tol=1e-9)


def test_fit_error_on_random_matrices_matches_the_spectrum_estimate() -> None:
    """i.i.d. W: all n² singular values of the rearrangement are alike, so n of them leave
    ≈ √(1 − 1/n) while n² ≪ out·in/n²: more compression (larger n) fits worse; n = 1 is exact."""
    torch.manual_seed(3)
    weight = torch.randn(256, 256, dtype=torch.float64)
    errors = {n: kronecker_fit(weight, n).rel_error for n in (1, 2, 4, 8)}
    assert errors[1] < 1e-12
    assert errors[1] < errors[2] < errors[4] < errors[8] < 1
    for n in (2, 4, 8):  # R is (n², 65536/n²): 4 × 16384 … 64 × 1024
        assert abs(errors[n] - math.sqrt(1 - 1 / n)) < 0.05, (n, errors[n])


def test_to_dense_round_trip() -> None:
    torch.manual_seed(4)
    for layer, x in [
        (PHMLinear(12, 8, n=4, dtype=torch.float64), torch.randn(3, 12, dtype=torch.float64)),
        (PHMConv2d(8, 8, 3, algebra="m2r", padding=1, dtype=torch.float64),
         torch.randn(1, 8, 5, 5, dtype=torch.float64)),
    ]:
        dense = to_dense(layer)
        assert type(dense) in (nn.Linear, nn.Conv2d)
        assert_close(dense(x), layer(x))
        back = from_dense(dense, layer.n, layer.algebra)
        assert_close(back(x), layer(x))


def test_convert_model_replaces_eligible_layers_and_reports() -> None:
    torch.manual_seed(5)
    shared = nn.Linear(32, 32)
    model = nn.Sequential(
        nn.Conv2d(16, 32, 3, padding=1),  # 0: converted
        nn.Flatten(),
        nn.Linear(32 * 4, 64),  # 2: converted
        nn.Linear(64, 10),  # 3: 10 outputs do not divide by 4
        nn.Sequential(shared, nn.ReLU(), shared),  # 4.0 and 4.2: one module, converted once
        nn.Linear(8, 8),  # 5: below min_features
        nn.Linear(64, 64),  # 6: skipped by pattern
    )
    model, rows = convert_model(model, 4, min_features=16, skip=["6"])
    assert [r.path for r in rows] == ["0", "2", "4.0"]
    assert isinstance(model[0], PHMConv2d) and isinstance(model[2], PHMLinear)
    assert model[4][0] is model[4][2] and isinstance(model[4][0], PHMLinear)
    assert type(model[3]) is nn.Linear and type(model[5]) is nn.Linear
    assert type(model[6]) is nn.Linear
    row = rows[2]
    assert row.kind == "Linear" and row.shape == (32, 32)
    assert row.params_before == 32 * 32 + 32
    assert row.params_after == 4**3 + 32 * 32 // 4 + 32
    assert 0.5 < row.fit_error < 1.0  # a random init is far from a Kronecker sum
    model[0](torch.randn(1, 16, 2, 2))  # still runs


def test_convert_model_root_layer_and_fixed_algebra() -> None:
    new, rows = convert_model(nn.Linear(32, 16), algebra="quaternion")
    assert isinstance(new, PHMLinear) and new.algebra == "quaternion"
    assert rows[0].path == "(root)" and rows[0].params_after == 32 * 16 // 4 + 16
