"""The decode path: PHMLinear in eval mode under no_grad takes the order `rules_first` names and
equals the reference, first call and cached. (Both orders as functions against the reference,
forward and backward: test_kernels.py; the rule itself pinned: test_dispatch.py.)"""

from __future__ import annotations

import pytest
import torch

import phmscale.nn.linear as linear_module
from phmscale.nn import PHMLinear
from phmscale.nn.functional import reference_linear, rules_first
from tests.nn.helpers import assert_close


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
            assert_close(layer(x), reference_linear(x, layer.A, layer.effective_S(), layer.bias))
    expected = "packed_structured_linear" if rules_first(rows, n) else "structured_linear"
    assert used == [expected, expected]
