"""Hypercomplex layers: weights W = Σᵢ Aᵢ ⊗ Sᵢ with learned rules (PHM, any n) or a fixed
algebra's rules (ℂ, ℍ, 𝕆, sedenions, M₂(ℝ), M₂(ℂ), M₃(ℝ), M₄(ℝ)), for linear and 1/2/3-d
convolution layers; their kernels (`functional`), initialization, dense ↔ PHM conversion and
algebra-element pruning. Imports torch only; models build on it, infrastructure never enters.

Modules: algebras (structure constants), functional (materialize / structured kernels and the
dispatcher), cache (the eval-time weight cache), init, base / linear / conv (the layers),
convert, prune.
"""

from phmscale.nn import functional
from phmscale.nn.algebras import (
    ALGEBRA_DIMS,
    ALGEBRAS,
    algebra_dim,
    algebra_rules,
    structure_constants,
)
from phmscale.nn.base import PHMBase
from phmscale.nn.conv import PHMConv1d, PHMConv2d, PHMConv3d
from phmscale.nn.convert import (
    ConversionRow,
    KroneckerFit,
    convert_model,
    from_dense,
    kronecker_fit,
    to_dense,
)
from phmscale.nn.functional import phm_weight
from phmscale.nn.init import target_variance
from phmscale.nn.linear import PHMLinear
from phmscale.nn.prune import (
    LayerSparsity,
    SparsityReport,
    count_parameters,
    prune_elements,
    sparsity_report,
)

__all__ = [
    "ALGEBRAS",
    "ALGEBRA_DIMS",
    "ConversionRow",
    "KroneckerFit",
    "LayerSparsity",
    "PHMBase",
    "PHMConv1d",
    "PHMConv2d",
    "PHMConv3d",
    "PHMLinear",
    "SparsityReport",
    "algebra_dim",
    "algebra_rules",
    "convert_model",
    "count_parameters",
    "from_dense",
    "functional",
    "kronecker_fit",
    "phm_weight",
    "prune_elements",
    "sparsity_report",
    "structure_constants",
    "target_variance",
    "to_dense",
]
