"""A ResNet's weight layers as data: shapes, analytic parameters and FLOPs, width matching.

`layer_shapes(spec)` lists every convolution and the head of the network `resnet.AlgebraResNet`
builds, with its output size, without building anything. It is written from the architecture
(stems, stages, strides), not from the module code, so tests/models can hold the two against
each other: analytic parameters must equal the built model's, analytic FLOPs the measured ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from phmscale.models.layers import REAL, Algebra
from phmscale.models.resnet import ARCHS, EXPANSION
from phmscale.spec import ModelSpec


@dataclass(frozen=True)
class LayerShape:
    """One weight layer: a k×k convolution (the head is a 1×1 "conv" on a 1×1 map)."""

    name: str
    cin: int
    cout: int
    k: int
    out_hw: tuple[int, int]
    alg: Algebra
    bn: bool  # followed by a BatchNorm2d (2·cout parameters)
    bias: bool

    @property
    def params(self) -> int:
        rules = self.alg.n**3 if self.alg.name == "phm" else 0  # learned A; a fixed one is a buffer
        return self.cout * self.cin * self.k**2 // self.alg.n + rules + self.bias * self.cout

    @property
    def flops(self) -> int:
        """Forward FLOPs per sample of the dense GEMM/conv on the materialized weight."""
        return 2 * self.cout * self.cin * self.k**2 * self.out_hw[0] * self.out_hw[1]


def _out(hw: tuple[int, int], k: int, stride: int, pad: int) -> tuple[int, int]:
    return ((hw[0] + 2 * pad - k) // stride + 1, (hw[1] + 2 * pad - k) // stride + 1)


def layer_shapes(spec: ModelSpec) -> list[LayerShape]:
    """Every conv and the head, in forward order, for the spec's width as given."""
    alg = Algebra.of(spec)
    stem_alg = REAL if spec.real_stem else alg
    kind, counts = ARCHS[spec.arch]
    base = spec.base_width
    cin = stem_alg.round_up(spec.input_shape[0])
    hw = (spec.input_shape[1], spec.input_shape[2])
    if spec.stem == "imagenet":
        hw = _out(hw, 7, 2, 3)
        out = [LayerShape("stem", cin, base, 7, hw, stem_alg, True, False)]
        hw = _out(hw, 3, 2, 1)  # maxpool
    else:
        out = [LayerShape("stem", cin, base, 3, hw, stem_alg, True, False)]
    cin = base
    for s, count in enumerate(counts):
        width = base * 2**s
        cout = width * EXPANSION[kind]
        for i in range(count):
            stride = 2 if (s > 0 and i == 0) else 1
            name = f"stage{s}.{i}"
            hw_in, hw = hw, _out(hw, 3, stride, 1)
            if kind == "basic":
                out += [LayerShape(f"{name}.conv1", cin, width, 3, hw, alg, True, False),
                        LayerShape(f"{name}.conv2", width, cout, 3, hw, alg, True, False)]
            else:
                out += [LayerShape(f"{name}.conv1", cin, width, 1, hw_in, alg, True, False),
                        LayerShape(f"{name}.conv2", width, width, 3, hw, alg, True, False),
                        LayerShape(f"{name}.conv3", width, cout, 1, hw, alg, True, False)]
            if stride != 1 or cin != cout:
                out.append(LayerShape(f"{name}.shortcut", cin, cout, 1, hw, alg, True, False))
            cin = cout
    head_alg = REAL if spec.real_head else alg
    out.append(LayerShape("head", cin, head_alg.round_up(spec.num_classes), 1, (1, 1),
                          head_alg, False, True))
    return out


def resnet_params(spec: ModelSpec) -> int:
    """Analytic parameter count: layers (S, learned A, bias) plus 2 per BatchNorm channel."""
    return sum(s.params + (2 * s.cout if s.bn else 0) for s in layer_shapes(spec))


def resnet_algebra_flops(spec: ModelSpec) -> int:
    """Forward FLOPs per sample as AlgebraNets count them (layers.ALGEBRA_MULTS)."""
    return round(sum(s.flops * s.alg.flop_ratio for s in layer_shapes(spec)))


def _closest_width(spec: ModelSpec, measure, target: float) -> int:  # type: ignore[no-untyped-def]
    """The multiple of n whose net measures closest to target (measure grows with width)."""
    n = spec.algebra_dim

    def at(k: int) -> float:
        return measure(spec.model_copy(update={"width": k * n, "width_match": "none"}))

    hi = 1
    while at(hi) < target:
        hi *= 2
    lo = max(hi // 2, 1)
    while hi - lo > 1:  # invariant: at(hi) >= target (or hi == 1)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if at(mid) < target else (lo, mid)
    best = min({lo, hi}, key=lambda k: abs(at(k) - target))
    return best * n


def resolve_width(spec: ModelSpec) -> ModelSpec:
    """Apply `width_match`: the same spec with `width` set and width_match 'none'.

    params: the width (a multiple of n) whose parameter count is closest to the real net's at
    the spec's width; hypercomplex layers hold 1/n the weights, so this lands near width·√n.
    flops: the same for AlgebraNets' FLOPs (layers.ALGEBRA_MULTS): ℂ/ℍ/phm keep the width, M₂(ℝ)
    grows by ≈√2, M₄(ℝ) by ≈2. (Executed as a dense GEMM on the materialized weight, equal
    width already means equal FLOPs, so matching on that count would be a no-op.)
    """
    if spec.kind != "resnet" or spec.width_match == "none":
        return spec
    real = spec.model_copy(update={"algebra": "real", "n": None, "width_match": "none"})
    if spec.width_match == "params":
        width = _closest_width(spec, resnet_params, resnet_params(real))
    else:
        width = _closest_width(spec, resnet_algebra_flops, resnet_algebra_flops(real))
    return spec.model_copy(update={"width": width, "width_match": "none"})
