"""Structure constants of the fixed algebras, and the left-multiplication rules built from them.

An algebra of dimension n has a basis e_0 … e_{n-1} and a product e_i·e_j = Σ_k T[i,j,k]·e_k.
A layer computes w·x with the weight on the left, so it needs the left-multiplication matrix of
every basis element: (e_i·x)_k = Σ_j T[i,j,k]·x_j, i.e. `A[i][k, j] = T[i, j, k]`. A PHM layer
with these n matrices as its rules A (not learned) is an AlgebraNets layer over that algebra.

Bases (the contract other parts and the tests rely on):
- real (1); complex (1, i); quaternion, octonion, sedenion by Cayley–Dickson doubling
  (a,b)(c,d) = (ac − d̄b, da + bc̄) with the components of a before those of b, which makes the
  quaternion basis (1, i, j, k) with ij = k.
- M_k(ℝ): the matrix units E_ab in row-major order (index a·k + b).
- M₂(ℂ): (Re E11, Re E12, Re E21, Re E22, Im E11, Im E12, Im E21, Im E22).
"""

from __future__ import annotations

import difflib
from functools import cache

import torch
from torch import Tensor

# The table is shared with phmscale.spec; its module is pure data, so nn still imports torch
# only.
from phmscale.algebra_dims import ALGEBRA_DIMS

# Every name a layer accepts for `algebra`.
ALGEBRAS: tuple[str, ...] = ("phm", *ALGEBRA_DIMS)


def _cayley_dickson(n: int) -> Tensor:
    """T (n, n, n) of the Cayley–Dickson algebra of dimension n (a power of 2), built by
    doubling the table of dimension m = n/2 block by block.

    With x = (a, b), y = (c, d) and (a,b)(c,d) = (ac − d̄b, da + bc̄), the four kinds of basis
    products are (s_j = +1 for j = 0, −1 otherwise, so that ē_j = s_j·e_j):
      (e_i, 0)(e_j, 0) = (e_i e_j, 0)        (e_i, 0)(0, e_j) = (0, e_j e_i)
      (0, e_i)(e_j, 0) = (0, s_j e_i e_j)    (0, e_i)(0, e_j) = (−s_j e_j e_i, 0)
    """
    if n == 1:
        return torch.ones(1, 1, 1, dtype=torch.float64, device="cpu")
    m = n // 2
    half = _cayley_dickson(m)  # (m, m, m)
    swapped = half.transpose(0, 1)  # swapped[i, j] = e_j e_i
    sign = -torch.ones(m, dtype=torch.float64, device="cpu")
    sign[0] = 1.0  # conjugation fixes the real unit and negates the rest
    table = torch.zeros(n, n, n, dtype=torch.float64, device="cpu")
    table[:m, :m, :m] = half
    table[:m, m:, m:] = swapped
    table[m:, :m, m:] = half * sign[None, :, None]
    table[m:, m:, :m] = -swapped * sign[None, :, None]
    return table


def _matrix_units(k: int) -> Tensor:
    """T (k², k², k²) of M_k(ℝ): E_ab·E_cd = δ_bc·E_ad, unit E_ab at index a·k + b."""
    table = torch.zeros(k * k, k * k, k * k, dtype=torch.float64, device="cpu")
    for a in range(k):
        for b in range(k):
            for d in range(k):
                table[a * k + b, b * k + d, a * k + d] = 1.0
    return table


def _complex_matrix_units() -> Tensor:
    """T (8, 8, 8) of M₂(ℂ) over ℝ: (u·E_ab)(v·E_cd) = uv·δ_bc·E_ad with u, v ∈ {1, i}.

    Index = part·4 + unit, part 0 = real, 1 = imaginary; uv is real (±1) when both parts agree.
    """
    real = _matrix_units(2)  # (4, 4, 4)
    table = torch.zeros(8, 8, 8, dtype=torch.float64, device="cpu")
    table[:4, :4, :4] = real  # 1·1 = 1
    table[:4, 4:, 4:] = real  # 1·i = i
    table[4:, :4, 4:] = real  # i·1 = i
    table[4:, 4:, :4] = -real  # i·i = −1
    return table


@cache
def _table(name: str) -> Tensor:
    # Built with explicit device="cpu" so a first call under `with torch.device("meta")` still
    # caches real values.
    if name in ("real", "complex", "quaternion", "octonion", "sedenion"):
        return _cayley_dickson(ALGEBRA_DIMS[name])
    if name == "m2c":
        return _complex_matrix_units()
    return _matrix_units({"m2r": 2, "m3r": 3, "m4r": 4}[name])


def check_algebra(algebra: str) -> str:
    """Return `algebra` if it is known; else raise ValueError naming the closest valid name."""
    if algebra in ALGEBRAS:
        return algebra
    close = difflib.get_close_matches(str(algebra), ALGEBRAS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(
        f"algebra={algebra!r} is unknown{hint}: use one of {', '.join(ALGEBRAS)}"
    )


def resolve_n(algebra: str, n: int | None) -> int:
    """The dimension a layer uses: n for `phm` (required), the algebra's own for a fixed one
    (n may be omitted or must agree)."""
    check_algebra(algebra)
    if algebra == "phm":
        if n is None:
            raise ValueError("n is required for algebra='phm': pass n >= 1, e.g. n=4")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n={n!r} is invalid for algebra='phm': pass an integer n >= 1")
        return n
    dim = ALGEBRA_DIMS[algebra]
    if n is not None and n != dim:
        raise ValueError(
            f"n={n!r} does not match algebra={algebra!r} (dimension {dim}): "
            f"omit n or pass n={dim}"
        )
    return dim


def algebra_dim(name: str) -> int:
    """Dimension of a fixed algebra (ValueError for `phm`, whose n is free, or unknown names)."""
    if check_algebra(name) == "phm":
        raise ValueError("algebra='phm' has no fixed dimension: its n is chosen per layer")
    return ALGEBRA_DIMS[name]


def structure_constants(name: str, dtype: torch.dtype = torch.float32) -> Tensor:
    """T (n, n, n) with e_i·e_j = Σ_k T[i, j, k]·e_k, for a fixed algebra."""
    algebra_dim(name)
    return _table(name).to(dtype, copy=True)  # a copy: the lru-cached table must stay pristine


def algebra_rules(name: str, dtype: torch.dtype = torch.float32,
                  device: torch.device | str | None = None) -> Tensor:
    """Left-multiplication matrices A (n, n, n) of a fixed algebra: A[i][k, j] = T[i, j, k]."""
    rules = structure_constants(name, torch.float64).permute(0, 2, 1)
    return rules.to(dtype=dtype, device=device).contiguous()
