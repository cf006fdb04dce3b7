"""`phmscale bench layer`: PHMLinear against nn.Linear and a loop-of-kron reference, side by side.

Cases (every ratio compares timings taken in the same run, interleaved round-robin after
warm-up, as medians of repeats; ratios > 1 mean PHM is faster):
- train: forward + backward (grads for x and every parameter; grads reset to None each step as
  `zero_grad()` does) on `rows` rows of a width × width layer, n in {2, 4, 8, 16}.
- decode: no grad, eval mode, 1 and 8 rows at width 4096. Weights are read "cold": each call
  uses the next of several copies whose total size is >= 256 MiB, because a real model's
  layers together exceed the last-level cache (tens of MiB on a server CPU) and decode
  is bound by reading them; timing one layer again and again would let PHM's n× smaller S sit
  in cache. `decode_hot` repeats one layer (cache-resident when small) for comparison.

The kron-loop reference builds W = Σᵢ kron(Aᵢ, Sᵢ) with a Python loop every forward, as public
PHM implementations do.

On a machine shared with other jobs, set OMP_WAIT_POLICY=PASSIVE (read when torch loads, so in
the shell): with the default spinning policy every multi-threaded kernel waits for its
descheduled partner thread, which hurts PHM's several small kernels far more than dense's one
GEMV. On an idle machine keep the default: PASSIVE puts the threads to sleep between kernels,
and waking them costs more than a small kernel runs (docs/benchmarks.md, "Thread wait policy").
Each row records `load`.
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
from torch import Tensor, nn

from phmscale.nn import PHMLinear

COLD_BYTES = 256 * 2**20  # rotate copies until the weights read per round exceed this


class KronLoopLinear(nn.Module):
    """Reference PHM layer: W rebuilt by a Python loop of torch.kron on every forward."""

    def __init__(self, source: PHMLinear) -> None:
        super().__init__()
        self.A = nn.Parameter(source.A.detach().clone())
        self.S = nn.Parameter(source.S.detach().clone())
        self.bias = nn.Parameter(source.bias.detach().clone()) if source.bias is not None else None

    def forward(self, x: Tensor) -> Tensor:
        weight = torch.kron(self.A[0], self.S[0])
        for i in range(1, self.A.shape[0]):
            weight = weight + torch.kron(self.A[i], self.S[i])
        return F.linear(x, weight, self.bias)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int, device: torch.device,
                         min_sample_s: float) -> dict[str, float]:
    """Median milliseconds per call of each fn, timed round-robin (order rotated every round) so
    that load from other processes hits every contender alike."""
    inner: dict[str, int] = {}
    for name, fn in fns.items():  # warm-up, and calls per sample so one lasts >= min_sample_s
        fn()
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        once = max(time.perf_counter() - start, 1e-6)
        inner[name] = max(1, min(1000, int(min_sample_s / once) + 1))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            fn, k = fns[name], inner[name]
            _sync(device)
            start = time.perf_counter()
            for _ in range(k):
                fn()
            _sync(device)
            samples[name].append((time.perf_counter() - start) / k * 1e3)
    return {name: statistics.median(values) for name, values in samples.items()}


def _train_step(module: nn.Module, x: Tensor, grad_out: Tensor) -> Callable[[], None]:
    params = list(module.parameters())

    def step() -> None:
        for p in params:
            p.grad = None
        x.grad = None
        module(x).backward(grad_out)

    return step


def _train_rows(width: int, rows: int, ns: tuple[int, ...], repeats: int, device: torch.device,
                min_sample_s: float = 0.02) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    x = torch.randn(rows, width, device=device, requires_grad=True)
    grad_out = torch.randn(rows, width, device=device)
    fns: dict[str, Callable[[], None]] = {
        "dense": _train_step(nn.Linear(width, width, device=device), x, grad_out)
    }
    for n in ns:
        phm = PHMLinear(width, width, n=n, device=device)
        fns[f"phm{n}"] = _train_step(phm, x, grad_out)
        fns[f"kron{n}"] = _train_step(KronLoopLinear(phm), x, grad_out)
    ms = _interleaved_medians(fns, repeats, device, min_sample_s)
    return [_row("train", n, width, rows, ms["dense"], ms[f"phm{n}"], ms[f"kron{n}"]) for n in ns]


def _rotation(module: nn.Module, cold_bytes: int) -> list[nn.Module]:
    """Copies of `module` whose parameters together exceed cold_bytes (at least 2)."""
    size = sum(p.numel() * p.element_size() for p in module.parameters())
    return [module] + [copy.deepcopy(module) for _ in range(max(2, -(-cold_bytes // size)) - 1)]


def _decode_call(modules: list[nn.Module], x: Tensor) -> Callable[[], object]:
    """Calls cycling through `modules`; each is called once here, so every copy's eval-time
    cache (PHM's side-by-side S) is built before timing, as in a decode loop's steady state."""
    for module in modules:
        module(x)
    state = {"i": 0}

    def call() -> object:
        state["i"] = (state["i"] + 1) % len(modules)
        return modules[state["i"]](x)

    return call


@torch.no_grad()
def _decode_rows(width: int, rows_list: tuple[int, ...], ns: tuple[int, ...], repeats: int,
                 device: torch.device, cold_bytes: int = COLD_BYTES,
                 min_sample_s: float = 0.02) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    dense = nn.Linear(width, width, device=device).eval()
    layers = {n: PHMLinear(width, width, n=n, device=device).eval() for n in ns}
    dense_cold = _rotation(dense, cold_bytes)
    phm_cold = {n: _rotation(layer, cold_bytes) for n, layer in layers.items()}
    out = []
    for rows in rows_list:
        x = torch.randn(rows, width, device=device)
        fns: dict[str, Callable[[], object]] = {
            "dense": _decode_call(dense_cold, x), "dense_hot": _decode_call([dense], x)
        }
        for n in ns:
            fns[f"phm{n}"] = _decode_call(phm_cold[n], x)
            fns[f"phm_hot{n}"] = _decode_call([layers[n]], x)
            fns[f"kron{n}"] = _decode_call([KronLoopLinear(layers[n]).eval()], x)
        ms = _interleaved_medians(fns, repeats, device, min_sample_s)
        for n in ns:
            out.append(_row("decode", n, width, rows, ms["dense"], ms[f"phm{n}"], ms[f"kron{n}"]))
        for n in ns:
            out.append(_row("decode_hot", n, width, rows, ms["dense_hot"], ms[f"phm_hot{n}"],
                            ms[f"kron{n}"]))
    return out


def _row(case: str, n: int, width: int, rows: int, dense_ms: float, phm_ms: float,
         kron_ms: float) -> dict[str, Any]:
    return {
        "case": case,
        "n": n,
        "width": width,
        "rows": rows,
        "dense_ms": round(dense_ms, 4),
        "phm_ms": round(phm_ms, 4),
        "kron_loop_ms": round(kron_ms, 4),
        "phm_vs_dense": round(dense_ms / phm_ms, 3),
        "phm_vs_kron_loop": round(kron_ms / phm_ms, 3),
        "threads": torch.get_num_threads(),
        # 1-minute load average when the row was written: above `threads`, other processes
        # shared the cores and every timing (PHM's multi-kernel paths most) is inflated
        "load": round(os.getloadavg()[0], 2),
    }


def run(quick: bool = False, device: str | torch.device = "cpu") -> list[dict[str, Any]]:
    """Flat rows, one per (case, n, width, rows). quick=True: a tiny grid for smoke tests (a few
    seconds; its timings are too short to quote)."""
    dev = torch.device(device)
    if quick:
        rows = _train_rows(128, 128, (4,), repeats=3, device=dev, min_sample_s=0.002)
        return rows + _decode_rows(512, (1,), (4,), repeats=3, device=dev, cold_bytes=8 * 2**20,
                                   min_sample_s=0.002)
    out: list[dict[str, Any]] = []
    for width in (256, 1024):
        for rows in (256, 2048):
            out += _train_rows(width, rows, (2, 4, 8, 16), repeats=7, device=dev)
    return out + _decode_rows(4096, (1, 8), (2, 4, 8, 16), repeats=9, device=dev)
