"""The eval-time weight cache: reused while nothing changed, rebuilt after anything that changes
A, S or the mask (optimizer steps, fused ones included, load_state_dict, .to(), replacement)."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from phmscale.nn import PHMConv2d, PHMLinear, prune_elements


def _fresh(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the layer must output now: x Wᵀ + b from the current parameters, no cache."""
    with torch.no_grad():
        return torch.nn.functional.linear(x, layer.weight, layer.bias)


def _eval_out(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return layer(x)


@pytest.fixture
def layer() -> PHMLinear:
    torch.manual_seed(0)
    return PHMLinear(16, 8, n=4, algorithm="materialize").eval()


X = torch.randn(32, 16)


def test_cache_is_reused_only_in_eval_without_grad(layer: PHMLinear) -> None:
    with torch.no_grad():
        w1 = layer.dense_weight()
        assert layer.dense_weight() is w1  # hit
    assert layer.dense_weight() is not w1  # grad on: built fresh, part of the graph
    layer.train()
    with torch.no_grad():
        assert layer.dense_weight() is not w1
    assert len(layer._cache) == 0  # train() drops it


@pytest.mark.parametrize("make_opt", [
    lambda ps: torch.optim.SGD(ps, lr=0.1),
    lambda ps: torch.optim.Adam(ps, lr=0.1, foreach=True),
    lambda ps: torch.optim.AdamW(ps, lr=0.1, fused=True),  # writes without bumping _version
])
def test_rebuilt_after_optimizer_step_in_eval_mode(layer: PHMLinear, make_opt) -> None:
    opt = make_opt(layer.parameters())
    before = _eval_out(layer, X)
    layer(X).pow(2).sum().backward()  # eval mode, grad on: no cache involved
    opt.step()
    after = _eval_out(layer, X)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, _fresh(layer, X))


def test_rebuilt_after_load_state_dict(layer: PHMLinear) -> None:
    _eval_out(layer, X)
    other = PHMLinear(16, 8, n=4)
    layer.load_state_dict(other.state_dict())
    torch.testing.assert_close(_eval_out(layer, X), _fresh(other, X))


def test_rebuilt_after_in_place_write_and_replacement(layer: PHMLinear) -> None:
    _eval_out(layer, X)
    with torch.no_grad():
        layer.S.mul_(2)
    torch.testing.assert_close(_eval_out(layer, X), _fresh(layer, X))
    layer.S = nn.Parameter(torch.randn_like(layer.S))
    torch.testing.assert_close(_eval_out(layer, X), _fresh(layer, X))
    layer.S.data.copy_(torch.randn_like(layer.S))  # invisible to any check: documented
    layer.invalidate_cache()
    torch.testing.assert_close(_eval_out(layer, X), _fresh(layer, X))


def test_rebuilt_after_dtype_change_and_pruning(layer: PHMLinear) -> None:
    _eval_out(layer, X)
    layer.double()
    x64 = X.double()
    out = _eval_out(layer, x64)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, _fresh(layer, x64))
    prune_elements(layer, 0.5)
    torch.testing.assert_close(_eval_out(layer, x64), _fresh(layer, x64))


def test_fixed_algebra_conv_cache_and_pickling() -> None:
    conv = PHMConv2d(8, 8, 3, algebra="quaternion").eval()
    x = torch.randn(1, 8, 6, 6)
    with torch.no_grad():
        first = conv(x)
    buffer = io.BytesIO()
    torch.save(conv, buffer)  # a filled cache must not break pickling
    buffer.seek(0)
    clone = torch.load(buffer, weights_only=False)
    with torch.no_grad():
        torch.testing.assert_close(clone(x), first)
        conv.S.add_(1.0)
        assert not torch.allclose(conv(x), first)
