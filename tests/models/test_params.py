"""Parameter counts equal the layer formula summed over layers; savings against the twin."""

from __future__ import annotations

import pytest
import torch

from phmscale.models import build_model, dense_twin, is_algebra_layer, resnet_params
from phmscale.models.summary import algebra_layer_names
from phmscale.spec import ALGEBRA_DIMS, ModelSpec
from tests.models.helpers import lm, resnet, vit


def count(model: torch.nn.Module, names: list[str] | None = None) -> int:
    if names is None:
        return sum(p.numel() for p in model.parameters())
    modules = dict(model.named_modules())
    return sum(p.numel() for name in names for p in modules[name].parameters())


def linear(fan_in: int, fan_out: int, n: int, phm: bool) -> int:
    """The layer contract: out·in/n (+ n³ learned rules) + out bias."""
    return fan_out * fan_in // n + (n**3 if phm else 0) + fan_out


def transformer_formula(spec: ModelSpec) -> tuple[int, int]:
    """(all parameters, parameters in the blocks' algebra layers) from the spec alone."""
    d, h, n = spec.dim, spec.heads, spec.algebra_dim
    phm = spec.algebra == "phm"
    lin = {
        "standard": [(d, d)] * 4,
        "collapsed_qk": [(d, h * d), (d, d), (d, d)],
        "collapsed_qk_vo": [(d, h * d), (d, h * d)],
        "symmetric": [(d, d)] * 3,
    }[spec.attention]
    hidden = int(spec.mlp_ratio * d)
    if hidden:
        lin = lin + [(d, hidden), (hidden, d)]
    block_alg = sum(linear(i, o, n, phm) for i, o in lin)
    norms = 2 * d * (2 if hidden else 1)
    total = spec.depth * (block_alg + norms) + 2 * d  # + final LayerNorm
    if spec.task == "causal_lm":
        total += spec.vocab_size * d + spec.seq_len * d  # tied embedding, positions
    else:
        c, *sides = spec.input_shape
        tokens = 1
        for s in sides:
            tokens *= s // spec.patch_size
        patch_dim = c * spec.patch_size ** len(sides)
        cls = spec.pool == "cls"
        total += linear(patch_dim, d, 1, False) + (tokens + cls) * d + cls * d
        total += linear(d, spec.num_classes, 1, False)
    return total, spec.depth * block_alg


@pytest.mark.parametrize("attention", ["standard", "collapsed_qk", "collapsed_qk_vo", "symmetric"])
@pytest.mark.parametrize("make", [vit, lm], ids=["classify", "causal_lm"])
@pytest.mark.parametrize("algebra,n", [("phm", 4), ("quaternion", None), ("real", None)])
def test_transformer_params_match_formula(make, attention: str, algebra: str, n) -> None:  # type: ignore[no-untyped-def]
    spec = make(attention=attention, algebra=algebra, n=n, dim=32, heads=4)
    model = build_model(spec)
    total, in_blocks = transformer_formula(spec)
    assert count(model) == total
    names = algebra_layer_names(model)
    if algebra != "real":
        assert count(model, names) == in_blocks
        assert all(name.startswith("blocks.") for name in names)


def test_transformer_n4_holds_a_quarter_of_its_twins_projection_and_mlp_params() -> None:
    spec = vit(algebra="phm", n=4, dim=128, heads=4, mlp_ratio=4)
    model, twin = build_model(spec), dense_twin(spec)
    names = algebra_layer_names(model)
    ours, theirs = count(model, names), count(twin, names)
    # Per layer: out·in/4 + 64 + out vs out·in + out — the rules and biases keep it above 1/4.
    assert ours == transformer_formula(spec)[1]
    assert theirs == transformer_formula(spec.model_copy(update={"algebra": "real", "n": None}))[1]
    assert 0.25 < ours / theirs < 0.27


def test_dense_twin_is_real_and_on_meta() -> None:
    twin = dense_twin(vit(algebra="phm", n=4))
    assert all(p.is_meta for p in twin.parameters())
    assert not any(is_algebra_layer(m) for m in twin.modules())


@pytest.mark.parametrize("algebra", [a for a in ALGEBRA_DIMS if a not in ("real", "sedenion")])
def test_fixed_algebra_resnet_holds_1_over_dim_of_twin(algebra: str) -> None:
    dim = ALGEBRA_DIMS[algebra]
    spec = resnet(algebra=algebra, width=dim * 2 if dim < 9 else dim)
    model, twin = build_model(spec), dense_twin(spec)
    names = algebra_layer_names(model)
    assert names, "no algebra layers found"
    # Convs carry no bias and fixed rules are buffers: exactly 1/dim, layer by layer.
    assert count(twin, names) == dim * count(model, names)
    for name in names:
        assert count(twin, [name]) == dim * count(model, [name])


@pytest.mark.parametrize(
    "kw",
    [
        dict(arch="resnet20", algebra="quaternion", width=8),
        dict(arch="resnet20", algebra="phm", n=4, width=8, real_stem=False, real_head=False),
        dict(arch="resnet56", algebra="m3r", width=9),
        dict(arch="resnet18", algebra="complex", width=4, stem="imagenet", input_shape=[3, 32, 32]),
        dict(arch="resnet50", algebra="m2r", width=4, stem="imagenet", input_shape=[3, 32, 32]),
    ],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()),
)
def test_resnet_params_match_analytic(kw: dict) -> None:
    spec = resnet(**kw)
    assert count(build_model(spec)) == resnet_params(spec)


def test_resnet50_twin_is_the_standard_resnet50() -> None:
    spec = resnet(arch="resnet50", width=64, stem="imagenet", input_shape=[3, 224, 224],
                  num_classes=1000)
    # torchvision's resnet50 has 25,557,032 parameters; ours adds none (same convs, BN, fc).
    assert count(dense_twin(spec)) == 25_557_032


@pytest.mark.parametrize("algebra,ratio", [("quaternion", 4), ("m4r", 16), ("complex", 2)])
def test_width_match_params(algebra: str, ratio: int) -> None:
    from phmscale.models import resolve_spec
    spec = resnet(algebra=algebra, width=16, width_match="params")
    resolved = resolve_spec(spec)
    n = ALGEBRA_DIMS[algebra]
    assert resolved.base_width % n == 0 and resolved.width_match == "none"
    target = resnet_params(spec.model_copy(update={"algebra": "real", "width_match": "none"}))
    got = resnet_params(resolved)
    for other in (resolved.base_width - n, resolved.base_width + n):
        alt = resnet_params(resolved.model_copy(update={"width": other}))
        assert abs(got - target) <= abs(alt - target)
    assert abs(resolved.base_width - 16 * ratio**0.5) <= n  # hypercomplex width ≈ width·√n
