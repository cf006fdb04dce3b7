"""`phmscale bench generate`: tokens/s of greedy KV-cache generation, PHM against its dense twin.

Contenders per (width, depth): the dense twin (`algebra: real`) and PHM at n = 2, 4, 8, 16 with
the same depth, width, heads, prompt and length, each timed as whole `generate(...,
use_cache=True)` calls (prefill included), interleaved round-robin with the order rotated every
round (bench.layer's `_interleaved_medians`), median per contender. Before timing, each PHM
model's greedy tokens are checked against its `fold_dense` copy (the same function as one
dense matrix per layer).

The same run measures this CPU's memory read bandwidth (sum of a 512 MiB tensor), GEMM rate
(2048³ fp32 mm) and one-row F.linear rate over a 256 MiB weight (`gemv_gb_s`, what dense
decode's kernel reaches), and states each row's roofline: per token the dense twin reads
~4·params bytes and does ~2·params flops; PHM reads ~4·params_phm bytes (S, n× fewer) for the
same flops (the structured path multiplies every Sᵢ with every input component), so
time/token >= max(bytes / bandwidth, flops / GEMM rate).

`generate` puts the model in eval mode on entry and restores it on exit, which clears the
layers' eval caches, so every call rebuilds them (dense: W; PHM at n >= 4: the side-by-side S
its prefill uses): one weight copy per call, about one token's time of the 64.
"""

from __future__ import annotations

import copy
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from phmscale.bench.layer import _interleaved_medians
from phmscale.models.generate import generate
from phmscale.models.pretrained import fold_dense
from phmscale.models.registry import build_model
from phmscale.spec import TransformerSpec

NS = (2, 4, 8, 16)
# (width, depth): 256 fits the last-level cache (3M params, 13 MB); 1024 × 8 (101M, 400 MB)
# and 2048 × 4 (201M, 800 MB) stream their weights from memory every token
FULL = ((256, 4), (1024, 8), (2048, 4))
# prompt of 4 bytes: PHM's prefill stays on the structured path (rows·n·16 <= width) at n = 16
# for width >= 1024, so no dense W is built
PROMPT, NEW_TOKENS = 4, 64


def _spec(width: int, depth: int, n: int | None, seq_len: int) -> TransformerSpec:
    return TransformerSpec(algebra="real" if n is None else "phm", n=n,
                           task="causal_lm", vocab_size=256, seq_len=seq_len, dim=width,
                           depth=depth, heads=max(1, width // 64), mlp_ratio=4)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _median_s(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine_rates(quick: bool = False) -> dict[str, float]:
    """Memory read bandwidth (GB/s, a sum over a tensor far above the LLC), GEMM rate
    (GFLOP/s, a square fp32 mm) and the bandwidth a one-row F.linear reaches (GB/s of weights,
    dense decode's kernel) on this CPU at torch's thread count."""
    repeats = 3 if quick else 7
    big = torch.ones(2**24 if quick else 2**27)  # 64 MiB / 512 MiB of fp32
    bw = big.numel() * 4 / _median_s(big.sum, repeats) / 1e9
    del big
    size = 512 if quick else 2048
    a, b = torch.randn(size, size), torch.randn(size, size)
    peak = 2 * size**3 / _median_s(lambda: torch.mm(a, b), repeats) / 1e9
    w, x = torch.randn(size * 4, size * 4), torch.randn(1, size * 4)  # 256 MiB in full
    gemv = w.numel() * 4 / _median_s(lambda: F.linear(x, w), repeats) / 1e9
    return {"bandwidth_gb_s": round(bw, 2), "gemm_gflop_s": round(peak, 1),
            "gemv_gb_s": round(gemv, 2)}


def roofline_tok_s(bytes_per_token: float, flops_per_token: float,
                   rates: dict[str, float]) -> tuple[float, str]:
    """Tokens/s bound max(bytes / bandwidth, flops / GEMM rate) allows, and which term binds."""
    t_bytes = bytes_per_token / (rates["bandwidth_gb_s"] * 1e9)
    t_flops = flops_per_token / (rates["gemm_gflop_s"] * 1e9)
    return 1.0 / max(t_bytes, t_flops), "bandwidth" if t_bytes >= t_flops else "compute"


def _check_fold(model: nn.Module, prompt: torch.Tensor, new: int) -> None:
    """Greedy tokens of a PHM model equal those of its dense fold (the same function)."""
    folded = fold_dense(copy.deepcopy(model)).eval()
    ours, theirs = generate(model, prompt, new), generate(folded, prompt, new)
    if not torch.equal(ours, theirs):
        raise AssertionError(f"PHM and its fold_dense copy generate different tokens: "
                             f"{ours.tolist()} vs {theirs.tolist()}")


def _size_rows(width: int, depth: int, ns: tuple[int, ...], rounds: int, prompt_len: int,
               new: int, rates: dict[str, float]) -> list[dict[str, Any]]:
    seq_len = prompt_len + new
    torch.manual_seed(0)
    prompt = torch.randint(0, 256, (1, prompt_len))
    models = {"dense": build_model(_spec(width, depth, None, seq_len)).eval()}
    for n in ns:
        models[f"phm{n}"] = build_model(_spec(width, depth, n, seq_len)).eval()
        _check_fold(models[f"phm{n}"], prompt, new)
    fns = {name: (lambda m=m: generate(m, prompt, new)) for name, m in models.items()}
    ms = _interleaved_medians(fns, rounds, torch.device("cpu"), min_sample_s=0.0)
    dense_params = _params(models["dense"])
    dense_tok_s = new / (ms["dense"] / 1e3)
    dense_roof, bound = roofline_tok_s(4 * dense_params, 2 * dense_params, rates)
    rows = []
    for n in ns:
        phm_params = _params(models[f"phm{n}"])
        phm_tok_s = new / (ms[f"phm{n}"] / 1e3)
        # PHM: S's bytes, dense's flops (the structured path's GEMM does 2·out·in per row)
        phm_roof, phm_bound = roofline_tok_s(4 * phm_params, 2 * dense_params, rates)
        rows.append({
            "n": n, "width": width, "depth": depth, "new_tokens": new,
            "dense_params": dense_params, "phm_params": phm_params,
            "dense_tok_s": round(dense_tok_s, 1), "phm_tok_s": round(phm_tok_s, 1),
            "phm_vs_dense": round(phm_tok_s / dense_tok_s, 3),
            "dense_roofline_tok_s": round(dense_roof, 1), "phm_roofline_tok_s": round(phm_roof, 1),
            "bound": bound, "phm_bound": phm_bound,  # the roofline term that binds
            **rates, "threads": torch.get_num_threads(),
            # 1-minute load average: above `threads`, other processes shared the cores
            "load": round(os.getloadavg()[0], 2),
        })
    return rows


def run(quick: bool = False) -> list[dict[str, Any]]:
    """One row per (width, n). quick=True: one tiny model, a few tokens (seconds; its figures
    are too short to quote)."""
    rates = machine_rates(quick)
    if quick:
        return _size_rows(64, 2, (2, 4), rounds=3, prompt_len=PROMPT, new=8, rates=rates)
    rows: list[dict[str, Any]] = []
    for width, depth in FULL:
        rows += _size_rows(width, depth, NS, rounds=7, prompt_len=PROMPT, new=NEW_TOKENS,
                           rates=rates)
    return rows
