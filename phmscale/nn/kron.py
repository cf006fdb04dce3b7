"""W = Σᵢ kron(Aᵢ, Sᵢ) as one autograd op that allocates nothing of W's size besides W itself.

Layout: A (n, n, n), S (n, p, q, *kernel) → W (n·p, n·q, *kernel) with
W[k·p + a, j·q + b] = Σᵢ A[i, k, j]·S[i, a, b]. Viewed as W4 (n_k, p, n_j, q·z), the slab W4[k]
is contiguous and equals Σᵢ A[i, k, :]ᵀ ⊗ S[i] batched over a:

    W4[k] (p, n_j, qz) = A[:, k, :]ᵀ (n_j, n_i) @ S.permute(1, 0, 2) (p, n_i, qz)

so n batched GEMMs write W in its final layout, with no second W-sized buffer either way.

Backward, from dW viewed as G4 (n_k, p, n_j, qz):
    dA[:, k, :] = Σ_a S[:, a, :] @ G4[k, a]ᵀ         (bmm over a, then a sum of (p, n, n))
    dS[:, a, :] = Σ_k A[:, k, :] @ G4[k, a]          (baddbmm accumulation over k)
Both read dW once in place; no transposed copy of it. Multiply-adds: 2·n·out·in per pass, i.e.
n/rows of the layer's GEMMs (under 1% at n = 16 and 2048 rows).

`KronSumGemm` is the other order: ONE GEMM (n_k·n_j, n_i) @ (n_i, p·q·z) plus a transposing
copy forward, one transposing copy of dW and two GEMMs backward. It runs fewer, larger GEMMs but
needs that second W-sized buffer each way; `kron_kernel` says which of the two a W takes.
Both equal `functional.reference_weight` (a loop of torch.kron), which the tests hold them to.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class KronSum(torch.autograd.Function):
    """autograd op: (A, S) → Σᵢ kron(Aᵢ, Sᵢ) over S's first two axes (see the module doc)."""

    @staticmethod
    def forward(ctx: Any, A: Tensor, S: Tensor) -> Tensor:
        n, p, q = S.shape[:3]
        kernel = S.shape[3:]
        s3 = S.reshape(n, p, -1)  # (n_i, p, q·z)
        ctx.save_for_backward(A, s3)
        ctx.s_shape = S.shape
        w4 = torch.empty(n, p, n, s3.shape[2], dtype=S.dtype, device=S.device)  # (k, a, j, bz)
        s_by_row = s3.transpose(0, 1)  # (p, n_i, qz): a view, batched over a
        for k in range(n):
            torch.matmul(A[:, k, :].t(), s_by_row, out=w4[k])  # (n_j, n_i) @ (p, n_i, qz)
        return w4.view(n * p, n * q, *kernel)

    @staticmethod
    def backward(ctx: Any, grad_w: Tensor) -> tuple[Tensor | None, Tensor | None]:
        A, s3 = ctx.saved_tensors
        n, p, qz = s3.shape
        g4 = grad_w.reshape(n, p, n, qz)  # (k, a, j, bz)
        s_by_row = s3.transpose(0, 1)  # (p, n_i, qz)
        grad_a = grad_s = None
        if ctx.needs_input_grad[0]:
            grad_a = torch.empty_like(A)
            for k in range(n):
                # (p, n_i, qz) @ (p, qz, n_j) → (p, n_i, n_j), summed over a
                grad_a[:, k, :] = torch.bmm(s_by_row, g4[k].transpose(1, 2)).sum(0)
        if ctx.needs_input_grad[1]:
            acc = torch.zeros(p, n, qz, dtype=grad_w.dtype, device=grad_w.device)  # (a, i, bz)
            for k in range(n):
                acc.baddbmm_(A[:, k, :].expand(p, n, n), g4[k])  # (p, n_i, n_j) @ (p, n_j, qz)
            grad_s = acc.transpose(0, 1).reshape(ctx.s_shape)
        return grad_a, grad_s


class KronSumGemm(torch.autograd.Function):
    """Same op as KronSum, as one GEMM and a transposing copy each way (`kron_kernel` says when)."""

    @staticmethod
    def forward(ctx: Any, A: Tensor, S: Tensor) -> Tensor:
        n, p, q = S.shape[:3]
        s2 = S.reshape(n, -1)  # (n_i, p·q·z)
        ctx.save_for_backward(A, s2)
        ctx.s_shape = S.shape
        a2 = A.permute(1, 2, 0).reshape(n * n, n)  # (n_k·n_j, n_i): a2[(k,j), i] = A[i, k, j]
        w = (a2 @ s2).view(n, n, p, -1)  # (k, j, a, bz)
        return w.transpose(1, 2).reshape(n * p, n * q, *S.shape[3:])  # (k, a, j, bz): the copy

    @staticmethod
    def backward(ctx: Any, grad_w: Tensor) -> tuple[Tensor | None, Tensor | None]:
        A, s2 = ctx.saved_tensors
        n, p = A.shape[0], ctx.s_shape[1]
        # (k, a, j, bz) → (k·j, a·bz): the one copy of dW, shared by both gradients
        g2 = grad_w.reshape(n, p, n, -1).transpose(1, 2).reshape(n * n, -1)
        grad_a = grad_s = None
        if ctx.needs_input_grad[0]:
            grad_a = (g2 @ s2.t()).view(n, n, n).permute(2, 0, 1)  # (k, j, i) → (i, k, j)
        if ctx.needs_input_grad[1]:
            a2 = A.permute(1, 2, 0).reshape(n * n, n)
            grad_s = (a2.t() @ g2).view(ctx.s_shape)
        return grad_a, grad_s


GEMM_MAX_BYTES = 32 * 2**20  # glibc's largest mmap threshold: smaller buffers come from the heap
GEMM_MIN_N = 4  # at n = 2-3 the loops are 2-3 batched GEMMs, as fast as one GEMM + copy


def kron_kernel(n: int, weight_bytes: int) -> type[torch.autograd.Function]:
    """The builder of a W of `weight_bytes` bytes at algebra dimension n.

    Rule: `KronSumGemm` while n >= GEMM_MIN_N and W < GEMM_MAX_BYTES, else `KronSum`.
    Why: the loops' n small batched GEMMs (K = n each) cost more than one big GEMM and a copy
    once n reaches 4, but the GEMM form's extra W-sized buffer is only cheap while glibc serves
    it from the heap; above its largest mmap threshold (32 MiB on Linux) every step maps fresh
    pages and their faults cost more than the loops save. Figures: docs/benchmarks.md, "Weight
    builder".
    """
    if n >= GEMM_MIN_N and weight_bytes < GEMM_MAX_BYTES:
        return KronSumGemm
    return KronSum


def kron_sum(A: Tensor, S: Tensor) -> Tensor:
    """Σᵢ kron(Aᵢ, Sᵢ) over S's first two axes: (n·p, n·q, *kernel); differentiable, by the
    builder `kron_kernel` picks for this n and W's size."""
    n = S.shape[0]
    return kron_kernel(n, S.numel() * n * S.element_size()).apply(A, S)
