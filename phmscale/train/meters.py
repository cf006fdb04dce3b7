"""Throughput, step-time split, checkpoint stall, memory and MFU meters.

MFU = achieved training FLOP/s ÷ (peak FLOP/s per device × devices). Achieved FLOP/s is the
analytic training FLOPs per sample (3 × forward: one forward, a backward of twice the forward)
times samples/s. The peak comes from, in order: an explicit `--peak-flops`, $PHMSCALE_PEAK_FLOPS,
the table below for a recognised GPU at the run's precision (dense, no sparsity, from the
vendor's data sheet), or on CPU a GEMM measured here. Anything else is reported as "unknown" —
never a borrowed figure.

A step's time is split into buckets (`BUCKETS`), each measured in the loop (train/loop.py):
- data_wait: waiting for the loader's next batch;
- forward_backward: moving the batch to the device, forward, loss, backward, reading the loss,
  less `comm`. ZeRO-3's parameter all-gathers (forward and backward) and gradient reductions
  that autograd hooks start during backward (ZeRO-2's full buckets, ZeRO-3's reduce-scatter)
  stay in here: they overlap the compute and no timer separates them;
- comm: DeepSpeed's own backward-reduce timer (`BACKWARD_REDUCE_MICRO_TIMER`: the gradient
  all-reduce at stage 0, the ZeRO-1/2 reduction of what is left after backward), enabled by
  `CommTimer` without the rest of `wall_clock_breakdown`; on GPU timed with CUDA events;
- optimizer: `engine.step()` — clipping, the update and, under ZeRO-1/2, the all-gather of the
  updated partitions;
- checkpoint: the time the loop was blocked by saves (taking the snapshot, and later waiting
  for the writer, the marker and rename, the hooks that run on a checkpoint).
On GPU the loop synchronises the device at each boundary, so a bucket holds its own kernels.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import torch

PEAK_ENV = "PHMSCALE_PEAK_FLOPS"  # per device, FLOP/s: a cluster's own figure
BUCKETS = ("data_wait", "forward_backward", "comm", "optimizer", "checkpoint")

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
    if env := os.environ.get(PEAK_ENV):
        return Peak(float(env), f"given (${PEAK_ENV})")
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


class CommTimer:
    """DeepSpeed's backward-reduce timer on one engine, read (and reset) once per step.

    DeepSpeed keeps the timer's name out of `engine_timers` unless `wall_clock_breakdown` is
    on, which also prints every timer every step; adding the one name times just the
    reduction. With `wall_clock_breakdown` on DeepSpeed reads and resets the timer itself
    each step, and comm reads 0 (its own log lines carry the figure then)."""

    def __init__(self, engine: Any):
        from deepspeed.utils.timer import BACKWARD_REDUCE_MICRO_TIMER

        self.engine, self.name = engine, BACKWARD_REDUCE_MICRO_TIMER
        timers = getattr(engine, "engine_timers", None)
        self.enabled = timers is not None and hasattr(engine, "timers")
        if self.enabled and self.name not in timers.backward_reduce_timers:
            timers.backward_reduce_timers.append(self.name)

    def take(self) -> float:
        """Seconds in the reduction since the last call."""
        if not self.enabled:
            return 0.0
        return float(self.engine.timers(self.name).elapsed(reset=True)) / 1000.0


class StepMeter:
    """Accumulates step time, its split and checkpoint stalls over a logging window."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.steps = 0
        self.samples = 0
        self.tokens = 0
        self.step_time = 0.0
        self.split = dict.fromkeys(BUCKETS, 0.0)
        self.loss_sum = 0.0
        self.stalls: list[float] = []  # of each save completed in the window
        self.writes: list[float] = []  # its writer's time (0 when written in the loop)

    @property
    def wait_time(self) -> float:
        return self.split["data_wait"]

    def add(self, samples: int, tokens: int, step_time: float, split: dict[str, float],
            loss: float) -> None:
        self.steps += 1
        self.samples += samples
        self.tokens += tokens
        self.step_time += step_time
        for bucket, seconds in split.items():
            self.split[bucket] += seconds
        self.loss_sum += loss

    def blocked(self, seconds: float) -> None:
        """Time the loop spent blocked by a save, outside any step."""
        self.split["checkpoint"] += seconds

    def saved(self, stall_s: float, write_s: float) -> None:
        """A save completed: its whole stall (all its blocked parts) and write time."""
        self.stalls.append(stall_s)
        self.writes.append(write_s)

    def summary(self, world_size: int, train_flops_per_sample: float, peak: Peak
                ) -> dict[str, float]:
        """Window metrics. samples/tokens are per rank; rates are for the whole job; times
        are seconds per step (`time_<bucket>_s`), `step_time_s` the step itself (all buckets
        but checkpoint, which falls between steps)."""
        t = max(self.step_time, 1e-9)
        steps = max(self.steps, 1)
        samples_per_s = self.samples * world_size / t
        flops = train_flops_per_sample * samples_per_s
        out = {
            "loss": self.loss_sum / steps,
            "samples_per_s": samples_per_s,
            "tokens_per_s": self.tokens * world_size / t,
            "step_time_s": t / steps,
            "data_wait_frac": self.wait_time / t,
            "flops_per_s": flops,
        }
        out |= {f"time_{bucket}_s": seconds / steps for bucket, seconds in self.split.items()}
        if self.stalls:
            out["checkpoint_stall_s"] = sum(self.stalls) / len(self.stalls)
            out["checkpoint_write_s"] = sum(self.writes) / len(self.writes)
        if peak.flops:
            out["mfu"] = flops / (peak.flops * world_size)
        return out


def peak_memory_bytes(device: torch.device) -> int:
    """Peak memory of this process: allocator peak on GPU, max RSS on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux: KiB
