"""Model registry: `ModelSpec` → `nn.Module`, and its dense twin for counting.

Seeding is the caller's job (`torch.manual_seed(spec.train.seed)` before `build_model`), so
the same spec and seed give the same initial weights on every rank.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from phmscale.models.resnet import AlgebraResNet
from phmscale.models.resnet_plan import resolve_width
from phmscale.models.transformer import PHMTransformer
from phmscale.spec import ModelSpec

BUILDERS: dict[str, Callable[[ModelSpec], nn.Module]] = {
    "phm_transformer": PHMTransformer,
    "resnet": AlgebraResNet,
}


def resolve_spec(spec: ModelSpec) -> ModelSpec:
    """The spec with derived values applied (ResNet `width_match` → a concrete `width`)."""
    return resolve_width(spec)


def build_model(spec: ModelSpec) -> nn.Module:
    """Build the network a model spec describes, on the current default device.

    forward(x) returns logits: classify (B, num_classes) from x float32 (B, *input_shape);
    causal_lm (B, T, vocab_size) from x int64 (B, T) with T <= seq_len.
    """
    return BUILDERS[spec.kind](resolve_spec(spec))


def twin_spec(spec: ModelSpec) -> ModelSpec:
    """The same architecture (resolved widths included) with real-valued layers."""
    return resolve_spec(spec).model_copy(update={"algebra": "real", "n": None})


def build_on_meta(spec: ModelSpec) -> nn.Module:
    """`build_model` on the meta device: shapes only, no memory, no init cost."""
    with torch.device("meta"):
        return build_model(spec)


def dense_twin(spec: ModelSpec) -> nn.Module:
    """The spec's architecture with `algebra: real`, on the meta device (no memory, no init
    cost: ResNet-50's twin is 25.6M parameters) — for parameter and FLOP counting only."""
    return build_on_meta(twin_spec(spec))
