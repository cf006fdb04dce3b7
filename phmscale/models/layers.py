"""Which algebra a layer uses, in one small value the model constructors pass around.

Every weight layer in `phmscale.models` is a `PHMLinear` or `PHMConv2d` (phmscale.nn). A real
layer is the same class with `algebra="real"` (n = 1), so the dense twin runs through the same
code as the hypercomplex net and parameter/FLOP comparisons see identical module trees.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from phmscale.nn import PHMConv2d, PHMLinear
from phmscale.spec import ModelSpec

# Multiplications one algebra product needs (schoolbook), i.e. the non-zeros of the n left-
# multiplication matrices together. AlgebraNets (Hoffmann et al. 2020) count FLOPs this way: a
# layer over n-dim elements costs dense·mults/n², so ℂ, ℍ, 𝕆 cost as much as a dense layer of the
# same width (4/4, 16/16, 64/64) while M₂(ℝ) costs 1/2 (8/16), M₃(ℝ) 1/3 and M₄(ℝ) 1/4 (64/256).
# `phm` learns dense rules, and Σᵢ Aᵢ⊗Sᵢ applied without materializing still costs ≈ the dense
# product (n GEMMs of out/n × in/n over n·B columns), so its ratio is 1.
ALGEBRA_MULTS: dict[str, int] = {
    "real": 1,
    "complex": 4,
    "quaternion": 16,
    "octonion": 64,
    "sedenion": 256,
    "m2r": 8,
    "m2c": 32,
    "m3r": 27,
    "m4r": 64,
}


@dataclass(frozen=True)
class Algebra:
    """An algebra choice: `name` as in the spec, `n` its resolved dimension."""

    name: str
    n: int

    @classmethod
    def of(cls, spec: ModelSpec) -> Algebra:
        return cls(spec.algebra, spec.algebra_dim)

    @property
    def hypercomplex(self) -> bool:
        """True unless the layers are plain real ones (phm with n = 1 still learns a rule)."""
        return self.name != "real"

    @property
    def flop_ratio(self) -> float:
        """AlgebraNets' FLOPs of this algebra's layer relative to a dense layer of equal width."""
        if self.name == "phm":
            return 1.0
        return ALGEBRA_MULTS[self.name] / self.n**2

    def _kw(self) -> dict[str, object]:
        # phm needs n; a fixed algebra knows its own dimension (the contract takes n=None).
        return {"n": self.n if self.name == "phm" else None, "algebra": self.name}

    def round_up(self, size: int) -> int:
        """The smallest multiple of n that holds `size` features (for zero padding)."""
        return -(-size // self.n) * self.n

    def linear(self, in_features: int, out_features: int, bias: bool = True) -> PHMLinear:
        return PHMLinear(in_features, out_features, bias=bias, **self._kw())

    def conv2d(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
        padding: int = 0, bias: bool = False,
    ) -> PHMConv2d:
        return PHMConv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias,
            **self._kw(),
        )


REAL = Algebra("real", 1)


def is_algebra_layer(module: nn.Module) -> bool:
    """A PHM layer whose algebra is not `real`: learned rules (any n) or a fixed algebra n > 1."""
    if not isinstance(module, (PHMLinear, PHMConv2d)):
        return False
    rules = module.A
    return isinstance(rules, nn.Parameter) or rules.shape[0] > 1


def pad_features(x: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """Zero-pad axis `dim` of x up to `size` (PHNN's fix for inputs n does not divide)."""
    missing = size - x.shape[dim]
    if missing == 0:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([x, x.new_zeros(shape)], dim=dim)
