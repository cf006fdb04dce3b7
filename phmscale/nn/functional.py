"""Kernels of a PHM layer W = Σᵢ Aᵢ ⊗ Sᵢ: the reference, two fast algorithms and their dispatch.

Shapes: A (n, n, n) with A[i][k, j] the weight of input component j in output component k under
rule i; S (n, p, q) with p = out/n, q = in/n (conv: (n, p, q, *kernel), q = in/(n·groups)).
Activations hold their n components as n contiguous blocks of the feature axis, so
W[k·p + a, j·q + b] = Σᵢ A[i, k, j]·S[i, a, b].

The reference is the definition, written plainly: `reference_weight` (a loop of torch.kron) and
`reference_linear` (F.linear with that W). Nothing in the layers calls them; every fast kernel
below and in kron.py is tested against them, forward and backward (tests/nn/test_kernels.py).

Both fast algorithms execute the same 2·R·out·in multiply-adds per R rows (the n distinct Sᵢ
each meet all n input components), so they differ only in the bytes they move:
- materialize: build W (out·in values) once, then one dense GEMM. Building W writes W once
  (kron.py), a small fraction of the layer's GEMMs at many rows, so training runs at dense speed.
- structured: never builds W and reads only S (out·in/n values), in one GEMM whose rows are
  the R·n input components, plus a mix by A (tiny). It moves n× more activation bytes (R·n
  rows instead of R), so it wins only at few rows, where the dense GEMM is bound by reading W
  (decode: R = 1). Two orders: S first (`structured_linear`, S used as a free view; training,
  and decode while R·n is tiny) and A first against a side-by-side copy of S
  (`packed_structured_linear`; eval, where the layers cache the copy).

Dispatch: `choose_algorithm` (materialize or structured) and `rules_first` (which structured
order); kron.py's `kron_kernel` picks W's builder. Each states its rule and reason; the
measurements behind the thresholds are in docs/benchmarks.md.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from phmscale.nn.kron import kron_sum

Algorithm = Literal["auto", "materialize", "structured"]
ALGORITHMS: tuple[str, ...] = ("auto", "materialize", "structured")

# Cut-offs of `choose_algorithm` and `rules_first`, tuned on a 2-core CPU (docs/benchmarks.md);
# another machine may move them, never the kernels' results.
ROW_FACTOR_REBUILT = 4
ROW_FACTOR_CACHED = 16
S_FIRST_MAX_COLUMNS = 8


def reference_weight(A: Tensor, S: Tensor) -> Tensor:
    """The definition W = Σᵢ kron(Aᵢ, Sᵢ) over S's first two axes: (n·p, n·q, *kernel).

    A plain loop of torch.kron (n full-size W's, summed), differentiable by autograd: the
    reference every kernel is tested against, never used by the layers. Kernel axes of a conv's
    S (n, p, q, *kernel) ride along: Aᵢ gets trailing 1s, so kron scales each tap by A[i, k, j].
    """
    taps = (1,) * (S.dim() - 3)
    W = torch.kron(A[0].reshape(*A[0].shape, *taps), S[0])
    for i in range(1, S.shape[0]):
        W = W + torch.kron(A[i].reshape(*A[i].shape, *taps), S[i])
    return W


def reference_linear(x: Tensor, A: Tensor, S: Tensor, bias: Tensor | None = None) -> Tensor:
    """The definition y = x Wᵀ + b with W = `reference_weight(A, S)`: x (..., in) → (..., out)."""
    return F.linear(x, reference_weight(A, S), bias)


def rules_first(rows: int, n: int) -> bool:
    """Decode order of the structured product: True for `packed_structured_linear` (rules
    first), False for `structured_linear` (S first).

    Rule: S first while rows·n <= S_FIRST_MAX_COLUMNS (8), rules first beyond.
    Why: both read S once and do the same multiply-adds; they differ in the shape of the one
    big GEMM, whose column count is rows·n either way. With few columns the short-K form
    (S first, K = in/n) streams S faster; with 16+ the long-K form over the side-by-side S
    (K = in) wins or ties. Figures: docs/benchmarks.md, "Decode kernel".
    """
    return rows * n > S_FIRST_MAX_COLUMNS


def check_algorithm(algorithm: str) -> str:
    """Return `algorithm` if valid; else raise ValueError naming the valid choices."""
    if algorithm not in ALGORITHMS:
        raise ValueError(
            f"algorithm={algorithm!r} is unknown: use one of {', '.join(ALGORITHMS)}"
        )
    return algorithm


def choose_algorithm(rows: int, n: int, in_features: int, weight_cached: bool = False) -> str:
    """`structured` or `materialize` for a linear call on `rows` rows.

    Rule: `structured` while rows·n·factor <= in_features, with factor ROW_FACTOR_REBUILT (4)
    when W would be built for this call and ROW_FACTOR_CACHED (16) when a cached W exists;
    `materialize` otherwise, and always at n = 1 (a dense layer: W = A₀·S₀ is one scale).
    Why: materialize moves W (out·in values), structured moves activations n× wider than the
    layer's (R·n·out values), so they break even near R·n = in; structured's mix by A
    (n²/in of the GEMM's work) moves that below in, to in/4 when W would be rebuilt anyway
    and to in/16 when a cached W costs materialize only its read. Figures:
    docs/benchmarks.md, "Linear algorithm".
    """
    factor = ROW_FACTOR_CACHED if weight_cached else ROW_FACTOR_REBUILT
    if n > 1 and rows * n * factor <= in_features:
        return "structured"
    return "materialize"


def phm_weight(A: Tensor, S: Tensor) -> Tensor:
    """Dense W = Σᵢ kron(Aᵢ, Sᵢ) over the first two axes of S: (n·p, n·q, *kernel).

    kron.py's builders (batched GEMMs into W's layout); `reference_weight` is the same value
    as a plain loop of torch.kron, which writes n full-size W's and sums them.
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
    (K = n², tiny). As n batched GEMMs (bmm) instead of one it runs no faster
    (docs/benchmarks.md, "Decode kernel").
    """
    n, p, q = S.shape
    lead = x.shape[:-1]
    rows = x.numel() // (n * q)
    xs = x.reshape(rows * n, q)  # (R·n_j, q): component j of row r
    # z[r, j, i, a] = Σ_b S[i, a, b]·x[r, j, b]
    # computed as (S xsᵀ)ᵀ: MKL runs this skinny-N GEMM faster than F.linear's skinny-M form
    # at few rows (docs/benchmarks.md, "Decode kernel")
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
    reading S_cat once. It runs as yᵀ = S_cat uᵀ (M = out/n, N = R·n), which MKL runs faster
    than F.linear's u S_catᵀ (M = R·n) at few rows. At large n the product is compute-bound on
    a CPU: it still does dense's 2·out·in flops per row over n× fewer bytes (n/2 flops per
    byte), so the n× speed-up over dense needs a GPU-like flops-to-bandwidth ratio. Figures:
    docs/benchmarks.md, "Decode kernel".
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
