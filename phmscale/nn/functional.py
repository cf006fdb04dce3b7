"""Kernels of a PHM layer W = Σᵢ Aᵢ ⊗ Sᵢ: two algorithms for the linear case and a dispatcher.

Shapes: A (n, n, n) with A[i][k, j] the weight of input component j in output component k under
rule i; S (n, p, q) with p = out/n, q = in/n (conv: (n, p, q, *kernel), q = in/(n·groups)).
Activations hold their n components as n contiguous blocks of the feature axis, so
W[k·p + a, j·q + b] = Σᵢ A[i, k, j]·S[i, a, b].

Both algorithms execute the same 2·R·out·in multiply-adds per R rows (the n distinct Sᵢ each
meet all n input components), so they differ only in the bytes they move:
- materialize: build W (out·in values) once, then one dense GEMM. Building W writes W once
  (kron.py; ~1 ms forward + backward at 1024², against ~150 ms for the layer's three GEMMs on
  2048 rows on one core), so training at many rows runs at dense speed.
- structured: never builds W and reads only S (out·in/n values), in one GEMM whose rows are
  the R·n input components, plus a mix by A (tiny). It moves n× more activation bytes (R·n
  rows instead of R), so it wins only at few rows, where the dense GEMM is bound by reading W
  (decode: R = 1). Two orders: S first (`structured_linear`, S used as a free view; training,
  and decode while R·n is tiny) and A first against a side-by-side copy of S
  (`packed_structured_linear`; eval, where the layers cache the copy); `rules_first` picks.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from phmscale.nn.kron import kron_sum

Algorithm = Literal["auto", "materialize", "structured"]
ALGORITHMS: tuple[str, ...] = ("auto", "materialize", "structured")

# `auto` picks `structured` while rows·n·factor <= in_features, by rows because the two paths
# trade bytes that scale differently: materialize moves W (out·in values, per call when W is
# rebuilt), structured moves activations n× wider than the layer's (R·n·out values), so the
# break-even is near R·n = in; structured also adds 2·R·n²·out (A-first: n²·in) multiply-adds
# for mixing by A, n²/in of the GEMM (6% at n=16, in=4096; 25% at n=16, in=1024), which moves
# the break-even below R·n = in. Measured at widths 1024 and 4096, n = 2…16 on the reference
# 2-core EPYC (one core and two, on a shared machine, so ±20%):
# - W rebuilt every call (training, grad on): structured ahead at R·n = in/4 everywhere
#   (1.2-3×, 2-75× at a few rows), mixed at in/2 (0.8-1.6×), behind at R·n = in (0.7-0.97×):
#   factor 4.
# - W cached (eval under no_grad): materialize only reads W, so structured must win on bytes
#   alone: ahead at R·n = in/16 (1.15-2×), mixed at in/8…in/4 (0.65-1.4×), behind at in
#   (0.25-0.9×): factor 16.
ROW_FACTOR_REBUILT = 4
ROW_FACTOR_CACHED = 16


# Decode order of the structured product (eval, few rows), by the GEMM's column count R·n:
# S first (N = R·n, K = in/n) wins while R·n <= 8, rules first (one GEMM over the side-by-side
# S, K = in) from R·n = 16; figures in docs/benchmarks.md ("decode kernel").
S_FIRST_MAX_COLUMNS = 8


def rules_first(rows: int, n: int) -> bool:
    """True: `packed_structured_linear` (rules first); False: `structured_linear` (S first)."""
    return rows * n > S_FIRST_MAX_COLUMNS


def check_algorithm(algorithm: str) -> str:
    """Return `algorithm` if valid; else raise ValueError naming the valid choices."""
    if algorithm not in ALGORITHMS:
        raise ValueError(
            f"algorithm={algorithm!r} is unknown: use one of {', '.join(ALGORITHMS)}"
        )
    return algorithm


def choose_algorithm(rows: int, n: int, in_features: int, weight_cached: bool = False) -> str:
    """`structured` for few rows, else `materialize`: rows·n <= in/4 when W would be rebuilt,
    rows·n <= in/16 when a cached W exists (see ROW_FACTOR_REBUILT / ROW_FACTOR_CACHED).

    n = 1 is a plain dense layer: W = A₀·S₀ costs one scale, so it always materializes.
    """
    factor = ROW_FACTOR_CACHED if weight_cached else ROW_FACTOR_REBUILT
    if n > 1 and rows * n * factor <= in_features:
        return "structured"
    return "materialize"


def phm_weight(A: Tensor, S: Tensor) -> Tensor:
    """Dense W = Σᵢ kron(Aᵢ, Sᵢ) over the first two axes of S: (n·p, n·q, *kernel).

    n batched GEMMs straight into W's layout, no W-sized temporaries forward or backward
    (kron.py); a loop of `torch.kron` instead writes n full-size W's and sums them.
    """
    return kron_sum(A, S)


def materialize_linear(x: Tensor, A: Tensor, S: Tensor, bias: Tensor | None = None,
                       weight: Tensor | None = None) -> Tensor:
    """y = x Wᵀ + b with W built once (or passed in, e.g. from a cache): one dense GEMM."""
    return F.linear(x, phm_weight(A, S) if weight is None else weight, bias)


def structured_linear(x: Tensor, A: Tensor, S: Tensor, bias: Tensor | None = None) -> Tensor:
    """y = x Wᵀ + b without building W: reads S (out·in/n values) instead of W (out·in).

    Order for when S may change every call (training), and decode's while rows·n is tiny
    (`rules_first`): contract every input component with every Sᵢ first (one GEMM, K = q)
    because S viewed as (n·p, q) is free, no copy of S; then mix the n² products with A
    (K = n², tiny). As n batched GEMMs (bmm) instead of one it measured the same (±5%).
    """
    n, p, q = S.shape
    lead = x.shape[:-1]
    rows = x.numel() // (n * q)
    xs = x.reshape(rows * n, q)  # (R·n_j, q): component j of row r
    # z[r, j, i, a] = Σ_b S[i, a, b]·x[r, j, b]
    # computed as (S xsᵀ)ᵀ: MKL runs this skinny-N GEMM 1.5-2.6x faster than F.linear's
    # skinny-M form at width 4096, n = 4-16, 1 row (see packed_structured_linear)
    z = torch.mm(S.reshape(n * p, q), xs.t()).t()  # (R·n_j, n_i·p)
    mix = A.permute(1, 2, 0).reshape(n, n * n)  # (n_k, n_j·n_i): mix[k, (j,i)] = A[i, k, j]
    y = torch.matmul(mix, z.reshape(rows, n * n, p))  # (R, n_k, p)
    y = y.reshape(*lead, n * p)
    return y if bias is None else y + bias


def pack_structured(A: Tensor, S: Tensor) -> tuple[Tensor, Tensor]:
    """Operands of `packed_structured_linear`, laid out once (cached in eval by the layers):
    mix (n_k·n_i, n_j) with mix[(k,i), j] = A[i, k, j], and S_cat (p, n_i·q) with
    S_cat[a, (i,b)] = S[i, a, b], i.e. [S₀ S₁ … S_{n−1}] side by side (one copy of S)."""
    n, p, q = S.shape
    mix = A.permute(1, 0, 2).reshape(n * n, n)
    s_cat = S.permute(1, 0, 2).reshape(p, n * q)
    return mix, s_cat


def packed_structured_linear(x: Tensor, mix: Tensor, s_cat: Tensor,
                             bias: Tensor | None = None) -> Tensor:
    """The structured product with the rules applied first, for decode.

    u[r, k, i, :] = Σ_j A[i,k,j]·x[r, j, :] costs 2·R·n²·in (n²/out of the whole: 6% at n=16,
    out=4096); then y[r, k, :] = S_cat·u[r, k, :] is ONE GEMM with K = in, M = R·n, N = out/n,
    reading S_cat once. It runs as yᵀ = S_cat uᵀ (M = out/n, N = R·n): at width 4096, 1 row,
    weights cold, 2 threads on the idle reference VM, MKL takes 0.86 ms (n = 4) and 0.51 ms
    (n = 16) that way against 1.97 and 0.59 ms for F.linear's u S_catᵀ (M = R·n), and the
    dense GEMV 2.8 ms. n = 16 is compute-bound, not memory-bound, on this CPU: the product
    still does 2·out·in flops per row (dense's count) over n× fewer bytes, n/2 = 8 flops per
    byte, above the ~4 the 2 cores sustain per byte of memory bandwidth (23 GB/s GEMV), so
    the n× limit needs a GPU-like flops-to-bandwidth ratio.
    """
    n = mix.shape[1]
    p, nq = s_cat.shape
    q = nq // n
    lead = x.shape[:-1]
    rows = x.numel() // nq
    u = torch.matmul(mix, x.reshape(rows, n, q))  # (R, n_k·n_i, q)
    y = torch.mm(s_cat, u.view(rows * n, nq).t())  # (p, R·n_k)
    y = y.t().reshape(*lead, n * p)
    return y if bias is None else y + bias


def phm_linear(x: Tensor, A: Tensor, S: Tensor, bias: Tensor | None = None,
               algorithm: str = "auto", weight: Tensor | None = None) -> Tensor:
    """PHM linear map x (..., in) → (..., out), picking the algorithm by row count when `auto`.

    `weight`, when given, is a ready W (e.g. cached) that the materialize path uses as is.
    """
    if check_algorithm(algorithm) == "auto":
        n, _, q = S.shape
        algorithm = choose_algorithm(x.numel() // (n * q), n, n * q, weight is not None)
    if algorithm == "materialize":
        return materialize_linear(x, A, S, bias, weight)
    return structured_linear(x, A, S, bias)


def phm_conv(x: Tensor, A: Tensor, S: Tensor, bias: Tensor | None, stride: tuple[int, ...],
             padding: tuple[int, ...] | str, dilation: tuple[int, ...], groups: int,
             weight: Tensor | None = None) -> Tensor:
    """PHM convolution: the kernel W (out, in/groups, *k) is materialized, then F.convNd.

    A convolution reuses each weight H·W·… times per sample, so building W (out·in·k/groups
    values) is negligible next to the convolution itself; a structured conv would only add
    n-fold larger intermediate feature maps.
    """
    w = phm_weight(A, S) if weight is None else weight
    conv = (F.conv1d, F.conv2d, F.conv3d)[w.dim() - 3]
    return conv(x, w, bias, stride, padding, dilation, groups)
