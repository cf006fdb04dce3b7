"""Small spec builders shared by the model tests."""

from __future__ import annotations

from typing import Any

import torch

from phmscale.spec import ModelSpec, parse_model_spec


def vit(**kw: Any) -> ModelSpec:
    """A tiny PHM-ViT on [1, 8, 8] inputs (16 patches of 2×2)."""
    base: dict[str, Any] = dict(kind="phm_transformer", algebra="phm", n=2, task="classify",
                                input_shape=[1, 8, 8], patch_size=2, dim=16, depth=2, heads=2,
                                mlp_ratio=2)
    return parse_model_spec({**base, **kw})


def lm(**kw: Any) -> ModelSpec:
    """A tiny byte LM with a 16-byte context."""
    base: dict[str, Any] = dict(kind="phm_transformer", algebra="phm", n=2, task="causal_lm",
                                seq_len=16, vocab_size=256, dim=16, depth=2, heads=2, mlp_ratio=2)
    return parse_model_spec({**base, **kw})


def resnet(**kw: Any) -> ModelSpec:
    """A tiny ResNet on [1, 8, 8] inputs."""
    base: dict[str, Any] = dict(kind="resnet", algebra="quaternion", arch="resnet20",
                                stem="small", width=4, input_shape=[1, 8, 8], num_classes=10)
    return parse_model_spec({**base, **kw})


def batch(spec: ModelSpec, b: int = 2) -> torch.Tensor:
    """A random batch in the data contract's form."""
    if spec.task == "causal_lm":
        return torch.randint(0, spec.vocab_size, (b, spec.seq_len))
    return torch.randn(b, *spec.input_shape)
