"""The three dispatch rules pinned at a few shapes, so a retuned threshold is a visible change:
kron.kron_kernel (which builder writes W), functional.choose_algorithm (materialize or
structured) and functional.rules_first (which structured order in eval)."""

from __future__ import annotations

import pytest
import torch

from phmscale.nn import kron
from phmscale.nn.functional import S_FIRST_MAX_COLUMNS, choose_algorithm, rules_first
from phmscale.nn.kron import GEMM_MAX_BYTES, KronSum, KronSumGemm, kron_kernel

MIB = 2**20


@pytest.mark.parametrize(("n", "weight_bytes", "builder"), [
    (4, 4 * MIB, KronSumGemm),  # width 1024 fp32: W from the heap, one GEMM + copy
    (16, 16 * MIB, KronSumGemm),
    (4, GEMM_MAX_BYTES - 1, KronSumGemm),
    (4, GEMM_MAX_BYTES, KronSum),  # at glibc's mmap threshold: the copy-free loops
    (4, 64 * MIB, KronSum),  # width 4096 fp32
    (2, 4 * MIB, KronSum),  # n = 2, 3: the loops at any size
    (3, 1024, KronSum),
    (1, 1024, KronSum),
])
def test_weight_builder_choice(n: int, weight_bytes: int, builder: type) -> None:
    assert kron_kernel(n, weight_bytes) is builder


@pytest.mark.parametrize(("shape", "dtype", "asked"), [
    ((4, 8, 8), torch.float32, (4, 32 * 32 * 4)),
    ((2, 5, 5), torch.float64, (2, 10 * 10 * 8)),
    ((4, 2, 3, 3, 3), torch.float32, (4, 8 * 12 * 9 * 4)),  # conv: kernel taps count in W
])
def test_kron_sum_asks_with_the_weight_bytes(shape: tuple[int, ...], dtype: torch.dtype,
                                             asked: tuple[int, int],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, int]] = []
    real = kron.kron_kernel
    monkeypatch.setattr(kron, "kron_kernel", lambda n, b: seen.append((n, b)) or real(n, b))
    n = shape[0]
    kron.kron_sum(torch.randn(n, n, n, dtype=dtype), torch.randn(*shape, dtype=dtype))
    assert seen == [asked]


@pytest.mark.parametrize(("rows", "n", "in_features", "cached", "algorithm"), [
    (1, 4, 4096, False, "structured"),
    (256, 4, 4096, False, "structured"),  # R·n·4 = in: the last structured row count
    (257, 4, 4096, False, "materialize"),
    (32, 16, 4096, False, "structured"),
    (8, 16, 4096, True, "structured"),
    (16, 16, 4096, True, "structured"),  # R·n·16 = in
    (17, 16, 4096, True, "materialize"),
    (64, 16, 4096, True, "materialize"),
    (2048, 4, 1024, False, "materialize"),
    (1, 16, 32, False, "materialize"),  # narrow layer: one row·n already exceeds in/4
    (1, 1, 4096, False, "materialize"),  # n = 1 is a dense layer
])
def test_linear_algorithm_choice(rows: int, n: int, in_features: int, cached: bool,
                                 algorithm: str) -> None:
    assert choose_algorithm(rows, n, in_features, weight_cached=cached) == algorithm


def test_decode_order_switches_at_the_gemm_column_count() -> None:
    assert S_FIRST_MAX_COLUMNS == 8
    s_first = [(1, 2), (1, 4), (1, 8), (2, 4), (4, 2), (8, 1)]
    packed = [(1, 16), (2, 8), (8, 2), (8, 4), (3, 3), (1, 9)]
    assert not any(rules_first(rows, n) for rows, n in s_first)
    assert all(rules_first(rows, n) for rows, n in packed)
