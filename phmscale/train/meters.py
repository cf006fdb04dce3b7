"""Throughput, data-wait and MFU meters.

MFU = achieved training FLOP/s ÷ (peak FLOP/s per device × devices). Achieved FLOP/s is the
analytic training FLOPs per sample (3 × forward: one forward, a backward of twice the forward)
times samples/s. The peak comes from, in order: an explicit `--peak-flops`, the table below for
a recognised GPU at the run's precision (dense, no sparsity, from the vendor's data sheet), or
on CPU a GEMM measured here. Anything else is reported as "unknown" — never a borrowed figure.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

# Dense peak FLOP/s by (device-name fragment, precision), from NVIDIA's data sheets (SXM parts;
# fp32 is plain FP32, not TF32).
KNOWN_PEAKS: dict[tuple[str, str], float] = {
    ("H200", "bf16"): 989e12, ("H200", "fp16"): 989e12, ("H200", "fp32"): 67e12,
    ("H100", "bf16"): 989e12, ("H100", "fp16"): 989e12, ("H100", "fp32"): 67e12,
    ("A100", "bf16"): 312e12, ("A100", "fp16"): 312e12, ("A100", "fp32"): 19.5e12,
    ("L4", "bf16"): 121e12, ("L4", "fp16"): 121e12, ("L4", "fp32"): 30.3e12,
    ("V100", "fp16"): 125e12, ("V100", "fp32"): 15.7e12,
}


@dataclass(frozen=True)
class Peak:
    flops: float | None  # per device
    source: str


def measured_cpu_peak(size: int = 1024, repeats: int = 5) -> float:
    """Best-of-`repeats` fp32 GEMM FLOP/s with torch's current thread count (2·n³ per GEMM)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up: thread pool, packing buffers
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best


def resolve_peak(device: torch.device, precision: str, override: float | None = None) -> Peak:
    if override:
        return Peak(override, "given (--peak-flops)")
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for (fragment, prec), flops in KNOWN_PEAKS.items():
            if fragment in name and prec == precision:
                return Peak(flops, f"data sheet: {name} {precision} dense")
        return Peak(None, f"unknown ({name} {precision} not in the table; pass --peak-flops)")
    if device.type == "cpu" and precision == "fp32":
        flops = measured_cpu_peak()
        return Peak(flops, f"measured: fp32 GEMM 1024², {torch.get_num_threads()} threads")
    return Peak(None, f"unknown ({device.type} {precision})")


class StepMeter:
    """Accumulates step and data-wait time over a logging window."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.steps = 0
        self.samples = 0
        self.tokens = 0
        self.step_time = 0.0
        self.wait_time = 0.0
        self.loss_sum = 0.0

    def add(self, samples: int, tokens: int, step_time: float, wait_time: float,
            loss: float) -> None:
        self.steps += 1
        self.samples += samples
        self.tokens += tokens
        self.step_time += step_time
        self.wait_time += wait_time
        self.loss_sum += loss

    def summary(self, world_size: int, train_flops_per_sample: float, peak: Peak
                ) -> dict[str, float]:
        """Window metrics. samples/tokens are per rank; rates are for the whole job."""
        t = max(self.step_time, 1e-9)
        samples_per_s = self.samples * world_size / t
        flops = train_flops_per_sample * samples_per_s
        out = {
            "loss": self.loss_sum / max(self.steps, 1),
            "samples_per_s": samples_per_s,
            "tokens_per_s": self.tokens * world_size / t,
            "step_time_s": t / max(self.steps, 1),
            "data_wait_frac": self.wait_time / t,
            "flops_per_s": flops,
        }
        if peak.flops:
            out["mfu"] = flops / (peak.flops * world_size)
        return out


def peak_memory_bytes(device: torch.device) -> int:
    """Peak memory of this process: allocator peak on GPU, max RSS on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux: KiB
