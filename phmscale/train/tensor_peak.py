"""The peak of live tensor bytes on this rank, from before the model is built.

On GPU, the caching allocator's own peak (`torch.cuda.max_memory_allocated`, reset first).
On CPU there is no allocator counter, and the process's max RSS mixes in the interpreter,
the imported libraries (torch and DeepSpeed: ~0.5 GiB) and freed pages malloc kept: it said
nothing about the model. Instead torch.profiler records every CPU tensor allocation and free
(`profile_memory`), and the peak of their running sum is the tensor peak. Recording costs
time per op, so it covers the engine build and the first `WINDOW_STEPS` optimizer steps only:
the optimizer state exists from the end of the first step, and every later step repeats the
second's allocations (measured: the same peak in steps 2 and 3 to the byte). What runs between
the build and the first step is the loop's set-up, not training, and is left out of the peak
(its CPU peak-FLOP/s GEMM alone holds 12 MiB: three 1024² fp32 matrices).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

WINDOW_STEPS = 2
BUILT, FIRST_STEP = "phmscale.engine_built", "phmscale.first_step"  # markers in the trace


def _mark(name: str) -> None:
    with torch.profiler.record_function(name):
        pass


class TensorPeak:
    """Started before the model exists; `watch(model, accum)` ends the CPU window after
    WINDOW_STEPS optimizer steps; `peak_bytes()` stops it (if still running) and answers."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._profiler: Any = None
        self._hook: Any = None
        self._bytes = 0
        self.source = "unavailable"

    def start(self) -> TensorPeak:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.source = "torch.cuda.max_memory_allocated"
            return self
        from torch.profiler import ProfilerActivity, profile

        if torch._C._autograd._profiler_enabled():  # one per process: the caller's wins
            self.source = "unavailable (another torch.profiler is running)"
            return self
        self._profiler = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        self._profiler.start()
        self.source = (f"torch.profiler CPU tensor allocations, engine build + first "
                       f"{WINDOW_STEPS} steps")
        return self

    def watch(self, model: nn.Module, accum: int) -> None:
        """Stop the CPU window at the first training forward after WINDOW_STEPS steps."""
        if self._profiler is None:
            return
        _mark(BUILT)
        forwards = [0]

        def count(module: nn.Module, args: tuple) -> None:
            if module.training and torch.is_grad_enabled():
                forwards[0] += 1
                if forwards[0] == 1:
                    _mark(FIRST_STEP)
                if forwards[0] > WINDOW_STEPS * accum:
                    self.stop()

        self._hook = model.register_forward_pre_hook(count)

    def stop(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self._profiler is None:
            return
        profiler, self._profiler = self._profiler, None
        profiler.stop()
        events = list(profiler.profiler.kineto_results.events())
        marks = {e.name(): e.start_ns() for e in events if e.name() in (BUILT, FIRST_STEP)}
        set_up = (marks.get(BUILT, 0), marks.get(FIRST_STEP, 0))
        memory = sorted((e.start_ns(), e.nbytes()) for e in events
                        if e.name() == "[memory]")  # +bytes allocated, −bytes freed
        live = peak = 0
        for at, nbytes in memory:
            live += nbytes
            if not set_up[0] < at < set_up[1]:
                peak = max(peak, live)
        self._bytes = peak

    def peak_bytes(self) -> int:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        self.stop()
        return self._bytes
