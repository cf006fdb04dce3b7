"""The decode kernels: both orders of the structured product (S first, rules first) equal the
plain reference (W materialized, F.linear) at several n, shapes and leading dims, and PHMLinear
in eval mode takes the order `rules_first` names."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import phmscale.nn.linear as linear_module
from phmscale.nn import PHMLinear
from phmscale.nn.functional import (
    S_FIRST_MAX_COLUMNS,
    materialize_linear,
    pack_structured,
    packed_structured_linear,
    rules_first,
    structured_linear,
)
from tests.nn.helpers import assert_close, kron_loop

LEADS = [(1,), (3,), (2, 3), (1, 1), (8,)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("n", "p", "q"), [(2, 8, 16), (4, 16, 8), (8, 3, 5), (16, 4, 4),
                                           (16, 2, 6)])
@pytest.mark.parametrize("lead", LEADS)
def test_every_form_equals_the_materialized_reference(n: int, p: int, q: int,
                                                      lead: tuple[int, ...],
                                                      dtype: torch.dtype) -> None:
    torch.manual_seed(n * 100 + p)
    A = torch.randn(n, n, n, dtype=dtype)
    S = torch.randn(n, p, q, dtype=dtype)
    b = torch.randn(n * p, dtype=dtype)
    x = torch.randn(*lead, n * q, dtype=dtype)
    expected = F.linear(x, kron_loop(A, S), b)  # (*lead, out)
    with torch.no_grad():
        forms = {
            "materialize": materialize_linear(x, A, S, b),
            "s_first": structured_linear(x, A, S, b),
            "rules_first": packed_structured_linear(x, *pack_structured(A, S), b),
        }
    for name, y in forms.items():
        assert y.shape == expected.shape, name
        assert_close(y, expected)


def test_rules_first_switches_at_the_gemm_column_count() -> None:
    assert not rules_first(1, 2) and not rules_first(1, 4) and not rules_first(1, 8)
    assert not rules_first(2, 4) and not rules_first(4, 2)
    assert rules_first(1, 16) and rules_first(2, 8) and rules_first(8, 2) and rules_first(8, 4)
    assert rules_first(1, S_FIRST_MAX_COLUMNS + 1)


@pytest.mark.parametrize("n", [2, 4, 8, 16])
@pytest.mark.parametrize("lead", [(1,), (1, 1), (2,), (8,), (2, 4)])
@pytest.mark.parametrize("pruned", [False, True])
def test_eval_layer_takes_the_named_order_and_equals_the_reference(
        n: int, lead: tuple[int, ...], pruned: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(n)
    width = 64
    layer = PHMLinear(width, width, n=n).eval()
    if pruned:
        layer.mask = torch.rand(layer.S.shape[1:]) > 0.5
    W = kron_loop(layer.A, layer.effective_S()).detach()
    x = torch.randn(*lead, width)
    rows = x.numel() // width
    used: list[str] = []
    for name in ("packed_structured_linear", "structured_linear"):
        real = getattr(linear_module, name)
        monkeypatch.setattr(linear_module, name,
                            lambda *a, _real=real, _name=name: used.append(_name) or _real(*a))
    layer.algorithm = "structured"
    with torch.no_grad():
        for _ in range(2):  # the second call reads the cached operands
            assert_close(layer(x), F.linear(x, W, layer.bias))
    expected = "packed_structured_linear" if rules_first(rows, n) else "structured_linear"
    assert used == [expected, expected]
