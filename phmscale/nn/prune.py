"""Pruning of whole algebra elements (AlgebraNets, Hoffmann et al. 2020), sparsity reports and
parameter counts.

An element is one algebra-valued weight: the n components S[:, r, c] (conv: S[:, r, c, *k], one
element per kernel position) that together act as w·x on one input element. Pruning removes
an element entirely, so the surviving weights stay algebra-valued and a sparse kernel skips
n² multiply-adds of W per pruned element. Magnitude = L2 norm over the n components (axis 0).

The mask is a persistent bool buffer of shape S.shape[1:], applied in forward as S·mask
(broadcast over axis 0): pruned elements stay zero in every forward while training continues,
and the mask travels in the state_dict. Pruning also zeroes the pruned S values, but an
optimizer may move them again (AdamW's momentum and weight decay, a ZeRO fp32 master copy):
the mask, not S, is the record of what was pruned (`effective_S`, `sparsity_report`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from phmscale.nn.base import PHMBase

LayersArg = nn.Module | Iterable[PHMBase]


def phm_layers(module_or_layers: LayersArg) -> list[tuple[str, PHMBase]]:
    """(path, layer) of every PHM layer in a module tree, or of an explicit iterable of layers."""
    if isinstance(module_or_layers, PHMBase):
        return [("", module_or_layers)]
    if isinstance(module_or_layers, nn.Module):
        return [(path, m) for path, m in module_or_layers.named_modules() if isinstance(m, PHMBase)]
    layers = list(module_or_layers)
    for layer in layers:
        if not isinstance(layer, PHMBase):
            raise ValueError(f"module_or_layers holds a {type(layer).__name__}: pass a module or "
                             "an iterable of PHM layers")
    return [(str(i), layer) for i, layer in enumerate(layers)]


def element_magnitudes(layer: PHMBase) -> Tensor:
    """L2 norm over the n components of each element: (p, q, *kernel); pruned ones are 0."""
    return layer.effective_S().detach().float().norm(dim=0)


@torch.no_grad()
def _apply_mask(layer: PHMBase, keep: Tensor) -> None:
    keep = keep.to(device=layer.S.device, dtype=torch.bool)
    layer.mask = keep
    layer.S.mul_(keep)  # bumps S._version: any cached W is rebuilt
    layer.invalidate_cache()


def prune_elements(module_or_layers: LayersArg, sparsity: float,
                   scope: str = "global") -> SparsityReport:
    """Mask the smallest-magnitude elements so that `sparsity` of them are pruned.

    scope="global": one ranking across all layers (round(sparsity·total) elements in all);
    scope="layer": round(sparsity·count) per layer. Already pruned elements have magnitude 0 and
    stay pruned, so calling again with a higher sparsity prunes further. Ties break by position,
    so the counts are exact.
    """
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity={sparsity} must be between 0 and 1 (fraction of elements)")
    if scope not in ("global", "layer"):
        raise ValueError(f"scope={scope!r} is unknown: use 'global' or 'layer'")
    layers = phm_layers(module_or_layers)
    mags = [element_magnitudes(layer) for _, layer in layers]
    if scope == "layer":
        for (_, layer), mag in zip(layers, mags, strict=True):
            flat = mag.flatten()
            drop = round(sparsity * flat.numel())
            keep = torch.ones_like(flat, dtype=torch.bool)
            keep[torch.argsort(flat, stable=True)[:drop]] = False
            _apply_mask(layer, keep.view_as(mag))
    elif layers:
        flat = torch.cat([m.flatten().cpu() for m in mags])
        drop = round(sparsity * flat.numel())
        keep = torch.ones_like(flat, dtype=torch.bool)
        keep[torch.argsort(flat, stable=True)[:drop]] = False
        for (_, layer), part, mag in zip(layers, keep.split([m.numel() for m in mags]), mags,
                                             strict=True):
            _apply_mask(layer, part.view_as(mag))
    return sparsity_report(module_or_layers if isinstance(module_or_layers, nn.Module)
                           else [layer for _, layer in layers])


@dataclass(frozen=True)
class LayerSparsity:
    """Element sparsity of one layer."""

    path: str
    elements: int
    pruned: int

    @property
    def sparsity(self) -> float:
        return self.pruned / self.elements if self.elements else 0.0


@dataclass(frozen=True)
class SparsityReport:
    """Per-layer and total element sparsity."""

    layers: list[LayerSparsity] = field(default_factory=list)

    @property
    def elements(self) -> int:
        return sum(row.elements for row in self.layers)

    @property
    def pruned(self) -> int:
        return sum(row.pruned for row in self.layers)

    @property
    def sparsity(self) -> float:
        return self.pruned / self.elements if self.elements else 0.0


def sparsity_report(module_or_layers: LayersArg) -> SparsityReport:
    """Elements and pruned (masked-out) elements of every PHM layer, and the total."""
    rows = []
    for path, layer in phm_layers(module_or_layers):
        # The mask has S.shape[1:]; counting it also works where S is a sharded placeholder.
        count = layer.mask.numel() if layer.mask is not None else layer.S[0].numel()
        pruned = 0 if layer.mask is None else count - int(layer.mask.sum())
        rows.append(LayerSparsity(path, count, pruned))
    return SparsityReport(rows)


def count_parameters(module: nn.Module, nonzero: bool = False) -> int:
    """Parameter count (each shared tensor once); with nonzero=True only the entries
    that are non-zero after masking (a pruned element's n components count as zero)."""
    seen: set[int] = set()
    total = 0
    for m in module.modules():
        for name, param in m.named_parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            if not nonzero:
                total += param.numel()
            elif isinstance(m, PHMBase) and name == "S":
                total += int(torch.count_nonzero(m.effective_S().detach()))
            else:
                total += int(torch.count_nonzero(param.detach()))
    return total
