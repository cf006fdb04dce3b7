"""Dense ↔ PHM conversion: fit a PHM layer to a pretrained dense weight, fold one back for export,
and convert the eligible layers of a whole module tree.

The fit (Van Loan & Pitsianis, 1993): Σᵢ Aᵢ ⊗ Sᵢ is linear in the pairs, and rearranging W so
that block (k, j) becomes row k·n + j,

    R[(k, j), (a, b, z)] = W[k·p + a, j·q + b, z]          R: (n², p·q·z)

turns every Kronecker product Aᵢ ⊗ Sᵢ into the rank-1 matrix vec(Aᵢ)·vec(Sᵢ)ᵀ. The nearest sum
of r Kronecker products in Frobenius norm is therefore the rank-r truncated SVD of R
(Eckart–Young), exact when W is such a sum, with relative error √(Σ_{t>r} σ_t² / Σ_t σ_t²).
For a fixed algebra the Aᵢ are given and S is the least-squares solution of R = Â·S with
Â[(k, j), i] = A[i, k, j].

Note on random matrices: for i.i.d. W the n² singular values of R are nearly equal, so keeping
n of them leaves a relative error ≈ √(1 − 1/n), which grows with n (1/n of the parameters
remain); a pretrained W converts well only if its R spectrum decays.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from phmscale.nn.algebras import resolve_n
from phmscale.nn.base import PHMBase
from phmscale.nn.conv import PHMConv1d, PHMConv2d, PHMConv3d
from phmscale.nn.linear import PHMLinear

_CONV_TO_PHM: dict[type[nn.Module], type[PHMBase]] = {
    nn.Conv1d: PHMConv1d,
    nn.Conv2d: PHMConv2d,
    nn.Conv3d: PHMConv3d,
}
_PHM_TO_CONV = {v: k for k, v in _CONV_TO_PHM.items()}


@dataclass(frozen=True)
class KroneckerFit:
    """A (r, n, n) rules, S (r, p, q, *kernel) factors and the fit's relative Frobenius error."""

    A: Tensor
    S: Tensor
    rel_error: float


def kronecker_fit(weight: Tensor, n: int, terms: int | None = None,
                  rules: Tensor | None = None) -> KroneckerFit:
    """Nearest Σᵢ Aᵢ ⊗ Sᵢ to `weight` (out, in', *kernel) with blocks of n × n.

    Learned rules (rules=None): `terms` (default n, at most n²) Kronecker products from the
    truncated SVD, each Aᵢ scaled to ‖Aᵢ‖² = n like a fixed algebra's signed permutation (the
    split of scale between Aᵢ and Sᵢ is free; this one matches init.py's ρ = 1). Fixed rules
    (`rules` given, (n, n, n)): S by least squares, A = rules.
    """
    out, inn = weight.shape[:2]
    kernel = weight.shape[2:]
    if out % n or inn % n:
        raise ValueError(f"weight of shape {tuple(weight.shape)} does not split into n={n} "
                         f"blocks per axis: both leading sizes must be multiples of {n}")
    p, q = out // n, inn // n
    w = weight.detach().to(torch.float64)
    blocks = w.reshape(n, p, n, q, -1).permute(0, 2, 1, 3, 4).reshape(n * n, -1)  # R (n², p·q·z)
    total = float(blocks.pow(2).sum())
    if rules is None:
        r = n if terms is None else terms
        if not 1 <= r <= n * n:
            raise ValueError(f"terms={terms} must be between 1 and n²={n * n}")
        u, sigma, vh = torch.linalg.svd(blocks, full_matrices=False)  # u (n², m), m = min(n², pqz)
        keep = min(r, sigma.numel())
        s_rows = torch.zeros(r, blocks.shape[1], dtype=torch.float64)
        s_rows[:keep] = sigma[:keep, None] * vh[:keep] / math.sqrt(n)
        a_cols = torch.zeros(n * n, r, dtype=torch.float64)
        a_cols[:, :keep] = u[:, :keep] * math.sqrt(n)
        if keep < r:  # fewer singular values than rules (p·q·z < n²): complete the basis,
            # the extra rules get S = 0 so W is unchanged
            complete = torch.linalg.qr(u[:, :keep], mode="complete").Q  # (n², n²)
            a_cols[:, keep:] = complete[:, keep:r] * math.sqrt(n)
        residual = float(sigma[keep:].pow(2).sum())
    else:
        r = n
        a_cols = rules.detach().to(torch.float64, copy=True).permute(1, 2, 0).reshape(n * n, n)
        s_rows = torch.linalg.lstsq(a_cols, blocks).solution  # (n, p·q·z)
        residual = float((blocks - a_cols @ s_rows).pow(2).sum())
    A = a_cols.T.reshape(r, n, n)
    S = s_rows.reshape(r, p, q, *kernel)
    rel = math.sqrt(max(residual, 0.0) / total) if total > 0 else 0.0
    return KroneckerFit(A.to(weight.dtype), S.to(weight.dtype), rel)


def _dense_dims(layer: nn.Module) -> tuple[int, int, int]:
    """(in, out, groups) of an nn.Linear / nn.ConvNd."""
    if isinstance(layer, nn.Linear):
        return layer.in_features, layer.out_features, 1
    return layer.in_channels, layer.out_channels, layer.groups


@torch.no_grad()
def _fit_layer(layer: nn.Module, n: int | None, algebra: str) -> tuple[PHMBase, float]:
    if type(layer) is not nn.Linear and type(layer) not in _CONV_TO_PHM:
        raise ValueError(f"layer of type {type(layer).__name__} cannot be converted: pass an "
                         "nn.Linear, nn.Conv1d, nn.Conv2d or nn.Conv3d")
    n = resolve_n(algebra, n)
    w = layer.weight
    factory = {"device": w.device, "dtype": w.dtype}
    bias = layer.bias is not None
    if type(layer) is nn.Linear:
        phm: PHMBase = PHMLinear(layer.in_features, layer.out_features, n, algebra, bias, **factory)
    else:
        if layer.padding_mode != "zeros":
            raise ValueError(f"padding_mode={layer.padding_mode!r} is not supported: PHM "
                             "convolutions pad with zeros")
        phm = _CONV_TO_PHM[type(layer)](
            layer.in_channels, layer.out_channels, layer.kernel_size, n, algebra,
            stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
            groups=layer.groups, bias=bias, **factory,
        )
    fit = kronecker_fit(w, n, rules=None if phm.learned_rules else phm.A)
    if phm.learned_rules:
        phm.A.copy_(fit.A)
    phm.S.copy_(fit.S)
    if bias:
        phm.bias.copy_(layer.bias)
    phm.train(layer.training)
    return phm, fit.rel_error


def from_dense(layer: nn.Module, n: int | None = None, algebra: str = "phm") -> PHMBase:
    """A PHMLinear / PHMConvNd whose W is the nearest Σᵢ Aᵢ ⊗ Sᵢ to `layer`'s weight (exact when
    it is such a sum); bias copied. ValueError if the shape does not divide by n."""
    return _fit_layer(layer, n, algebra)[0]


@torch.no_grad()
def to_dense(layer: PHMBase) -> nn.Module:
    """Fold a PHM layer into the equivalent nn.Linear / nn.ConvNd (mask applied), for export."""
    w = layer.weight.detach()
    factory = {"device": w.device, "dtype": w.dtype}
    bias = layer.bias is not None
    if isinstance(layer, PHMLinear):
        dense: nn.Module = nn.Linear(layer.in_features, layer.out_features, bias, **factory)
    else:
        dense = _PHM_TO_CONV[type(layer)](
            layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
            padding=layer.padding, dilation=layer.dilation, groups=layer.groups, bias=bias,
            **factory,
        )
    dense.weight.copy_(w)
    if bias:
        dense.bias.copy_(layer.bias)
    dense.train(layer.training)
    return dense


@dataclass(frozen=True)
class ConversionRow:
    """One converted layer: where, what, how well W was fitted, and parameters before/after."""

    path: str
    kind: str
    shape: tuple[int, ...]
    fit_error: float
    params_before: int
    params_after: int


def _eligible(layer: nn.Module, n: int, min_features: int) -> bool:
    # Exact types only: a subclass (LoRA wrapper, NonDynamicallyQuantizableLinear inside
    # nn.MultiheadAttention, whose weight is read directly) may rely on its own forward.
    if type(layer) is not nn.Linear and type(layer) not in _CONV_TO_PHM:
        return False
    if getattr(layer, "padding_mode", "zeros") != "zeros":
        return False
    inn, out, groups = _dense_dims(layer)
    return (
        min(inn, out) >= min_features
        and out % n == 0
        and out % groups == 0
        and inn % (n * groups) == 0
    )


def convert_model(module: nn.Module, n: int | None = None, algebra: str = "phm",
                  min_features: int = 16,
                  skip: Iterable[str] | Callable[[str, nn.Module], bool] = (),
                  ) -> tuple[nn.Module, list[ConversionRow]]:
    """Replace every eligible nn.Linear / nn.Conv1d/2d/3d in `module` by its PHM fit, in place.

    Eligible: exact type, zero padding, min(in, out) >= min_features (with 16 features and
    n = 4 a layer saves at most 192 weights while paying two extra kernel launches), and sizes
    divisible by n (channels by n·groups). `skip`: fnmatch patterns on the dotted module path
    (e.g. ["head", "*.attn.*"]) or a predicate (path, module) -> bool.

    Returns (module, rows): the same module (a new one only if `module` itself was converted)
    and one ConversionRow per converted layer. A layer shared by several parents is converted
    once and replaced everywhere.
    """
    n = resolve_n(algebra, n)
    if callable(skip):
        skipped = skip
    else:
        patterns = list(skip)

        def skipped(path: str, _: nn.Module) -> bool:
            return any(fnmatch.fnmatchcase(path, pattern) for pattern in patterns)

    replaced: dict[int, nn.Module] = {}
    rows: list[ConversionRow] = []
    for path, layer in module.named_modules():
        if id(layer) in replaced or not _eligible(layer, n, min_features) or skipped(path, layer):
            continue
        phm, error = _fit_layer(layer, n, algebra)
        replaced[id(layer)] = phm
        rows.append(ConversionRow(
            path=path or "(root)",
            kind=type(layer).__name__,
            shape=tuple(layer.weight.shape),
            fit_error=error,
            params_before=sum(p.numel() for p in layer.parameters()),
            params_after=sum(p.numel() for p in phm.parameters()),
        ))
    if id(module) in replaced:
        return replaced[id(module)], rows
    for parent in module.modules():
        # _modules, not named_children(): the latter lists a shared child only once per parent
        for name, child in list(parent._modules.items()):
            if child is not None and id(child) in replaced:
                setattr(parent, name, replaced[id(child)])
    return module, rows
