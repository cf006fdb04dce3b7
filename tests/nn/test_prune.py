"""Algebra-element pruning: exact element counts, masks in forward and in the state_dict."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from phmscale.nn import (
    PHMConv2d,
    PHMLinear,
    count_parameters,
    prune_elements,
    sparsity_report,
)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(PHMConv2d(8, 16, 3, n=4), nn.Flatten(), PHMLinear(16, 32, n=4),
                         PHMLinear(32, 8, algebra="quaternion"))


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.75])
def test_pruning_reaches_the_requested_element_count(scope: str, sparsity: float) -> None:
    model = _model()
    report = prune_elements(model, sparsity, scope=scope)
    assert report.elements == 4 * 2 * 9 + 8 * 4 + 2 * 8  # S[0].numel() per layer
    assert report.pruned == pytest.approx(sparsity * report.elements, abs=len(report.layers))
    if scope == "global":
        assert report.pruned == round(sparsity * report.elements)
    else:
        for row in report.layers:
            assert row.pruned == round(sparsity * row.elements)
    assert sparsity_report(model) == report


def test_pruned_elements_are_whole_and_the_smallest() -> None:
    layer = PHMLinear(16, 16, n=4)
    norms = layer.S.detach().norm(dim=0)  # (4, 4): one norm per element
    prune_elements(layer, 0.25)
    assert layer.mask.shape == (4, 4) and layer.mask.dtype == torch.bool
    assert int((~layer.mask).sum()) == 4
    assert norms[~layer.mask].max() <= norms[layer.mask].min()
    assert torch.all(layer.S[:, ~layer.mask] == 0)  # all n components of a pruned element
    W = layer.weight.detach().reshape(4, 4, 4, 4)  # (k, a, j, b): element (a, b) in every block
    assert torch.all(W.permute(1, 3, 0, 2)[~layer.mask] == 0)


def test_pruned_elements_stay_zero_while_training_and_pruning_accumulates() -> None:
    layer = PHMLinear(16, 16, n=4)
    prune_elements(layer, 0.5)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1, weight_decay=0.1)
    for _ in range(3):
        opt.zero_grad()
        layer(torch.randn(8, 16)).pow(2).sum().backward()
        opt.step()
    assert torch.all(layer.effective_S()[:, ~layer.mask] == 0)
    assert sparsity_report(layer).pruned == 8
    prune_elements(layer, 0.75)
    assert sparsity_report(layer).pruned == 12


def test_masks_survive_a_state_dict_round_trip() -> None:
    model = _model()
    prune_elements(model, 0.5)
    state = model.state_dict()
    assert {"0.mask", "2.mask", "3.mask"} <= set(state)
    fresh = _model()
    assert sparsity_report(fresh).pruned == 0
    fresh.load_state_dict(state)
    assert sparsity_report(fresh) == sparsity_report(model)
    x = torch.randn(2, 8, 1, 1)
    torch.testing.assert_close(fresh(nn.functional.pad(x, (1, 1, 1, 1))),
                               model(nn.functional.pad(x, (1, 1, 1, 1))))


def test_count_parameters_with_and_without_zeros() -> None:
    model = _model()
    total = count_parameters(model)
    assert total == sum(p.numel() for p in model.parameters())
    report = prune_elements(model, 0.5)
    assert count_parameters(model) == total
    pruned_values = sum(
        row.pruned * layer.n
        for row, layer in zip(report.layers, [model[0], model[2], model[3]], strict=True)
    )
    assert count_parameters(model, nonzero=True) == total - pruned_values
