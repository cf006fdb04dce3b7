"""Every model variant runs forward and backward on CPU with the contract's output shapes."""

from __future__ import annotations

import pytest
import torch

from phmscale.models import build_model
from phmscale.spec import ModelSpec
from tests.models.helpers import batch, lm, resnet, vit

VARIANTS = ["standard", "collapsed_qk", "collapsed_qk_vo", "symmetric"]


def _check_step(spec: ModelSpec, expected: tuple[int, ...], b: int = 2) -> None:
    torch.manual_seed(0)
    model = build_model(spec).train()
    x = batch(spec, b)
    out = model(x)
    assert out.shape == expected
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    out.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"no gradient reached {name}"
        assert torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("attention", VARIANTS)
@pytest.mark.parametrize("mlp_ratio", [0, 2])
def test_classify_variants(attention: str, mlp_ratio: float) -> None:
    spec = vit(attention=attention, mlp_ratio=mlp_ratio)
    _check_step(spec, (2, 10))


@pytest.mark.parametrize("attention", VARIANTS)
@pytest.mark.parametrize("mlp_ratio", [0, 2])
def test_causal_lm_variants(attention: str, mlp_ratio: float) -> None:
    spec = lm(attention=attention, mlp_ratio=mlp_ratio)
    _check_step(spec, (2, 16, 256))


def test_lm_shorter_context_than_seq_len() -> None:
    model = build_model(lm())
    assert model(torch.randint(0, 256, (3, 5))).shape == (3, 5, 256)


@pytest.mark.parametrize(
    "kw",
    [
        dict(algebra="real", n=None),
        dict(algebra="phm", n=1),
        dict(algebra="phm", n=4),
        dict(algebra="complex", n=None),
        dict(algebra="quaternion", n=None, pool="mean"),
        dict(algebra="m2r", n=None, attention="symmetric"),
        dict(algebra="m3r", n=None, dim=18, heads=2, mlp_ratio=1),  # dims divisible by 9
        dict(algebra="octonion", n=None, real_stem=False, real_head=False),  # 4 → 8 padded
        dict(input_shape=[1, 40], patch_size=4, pool="mean"),  # MNIST-1D: 10 tokens
        dict(input_shape=[3, 8, 8], patch_size=4, algebra="quaternion", n=None,
             real_stem=False, real_head=False),  # 48-dim patches, 10 → 12 logits dropped to 10
    ],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()),
)
def test_classify_algebras_and_inputs(kw: dict) -> None:
    _check_step(vit(**kw), (2, 10))


@pytest.mark.parametrize(
    "kw",
    [
        dict(arch="resnet20", algebra="real", width=4),
        dict(arch="resnet20", algebra="complex", width=4),
        dict(arch="resnet20", algebra="quaternion", width=4, real_stem=False, real_head=False),
        dict(arch="resnet20", algebra="m2r", width=4),
        dict(arch="resnet20", algebra="m3r", width=9),  # M₃(ℝ): widths 9/18/36
        dict(arch="resnet20", algebra="m3r", width=9, real_stem=False),  # 1 → 9 input channels
        dict(arch="resnet20", algebra="m4r", width=16),
        dict(arch="resnet20", algebra="phm", n=4, width=8, real_stem=False),
        dict(arch="resnet56", algebra="complex", width=2),
        dict(arch="resnet18", algebra="quaternion", width=4, stem="imagenet",
             input_shape=[3, 16, 16]),
        dict(arch="resnet18", algebra="quaternion", width=4, stem="small",
             input_shape=[3, 8, 8], real_stem=False),  # RGB zero-padded to 4 channels
        dict(arch="resnet34", algebra="complex", width=2, stem="imagenet",
             input_shape=[3, 16, 16]),
        dict(arch="resnet50", algebra="quaternion", width=4, stem="imagenet",
             input_shape=[3, 16, 16]),
        dict(arch="resnet50", algebra="phm", n=2, width=2, stem="small"),
        dict(arch="resnet20", algebra="quaternion", width=6, width_match="params"),
    ],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()),
)
def test_resnets(kw: dict) -> None:
    _check_step(resnet(**kw), (2, 10))


def test_seeded_builds_are_identical() -> None:
    spec = vit(algebra="phm", n=4)
    torch.manual_seed(3)
    a = build_model(spec).state_dict()
    torch.manual_seed(3)
    b = build_model(spec).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
