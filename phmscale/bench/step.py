"""`phmscale bench step`: the full engine against a bare PyTorch loop, side by side.

Three contenders, all in this process, run in turn `ROUNDS` times (so drift in machine load
hits each alike), each round's warm-up steps excluded; a contender's figure is the median step
time over all its rounds:
- engine: `phmscale.train.loop.train` — DeepSpeed, the WebDataset loader, meters, hooks;
- engine_mem: the same engine on the same batches held in memory (no loader): what DeepSpeed
  and the loop cost on their own;
- bare: the same model (same init) on the batches in memory, plain torch AdamW,
  `loss.backward(); clip; step`.
engine_vs_bare is the whole engine's overhead; engine_mem_vs_bare leaves out the data
pipeline, whose CPU work competes with the step for the cores when they are few (a 2-core
machine runs the step's 2 threads and the loader worker on 2 cores).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from phmscale.spec import JobSpec

WARMUP = 3


def _bare_loop(spec: JobSpec, batches: list[tuple[torch.Tensor, torch.Tensor]],
               steps: int) -> list[float]:
    from phmscale.models import build_model
    from phmscale.train.evaluate import loss_fn

    torch.manual_seed(spec.train.seed)
    model = build_model(spec.model)
    o = spec.train.optimizer
    opt = torch.optim.AdamW(model.parameters(), lr=o.lr, betas=o.betas, eps=o.eps,
                            weight_decay=o.weight_decay)
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        x, y = batches[i % len(batches)]
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if spec.train.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), spec.train.grad_clip)
        opt.step()
        times.append(time.perf_counter() - t0)
    return times


def run(spec: JobSpec, steps: int = 60, rounds: int = 2) -> list[dict[str, Any]]:
    """One row: engine, in-memory engine and bare samples/s, their ratios, and the engine's
    data-wait share."""
    from phmscale.data import make_loader
    from phmscale.train.loop import train
    from phmscale.train.memory import InMemorySource, take

    spec = spec.model_copy(deep=True)
    spec.train.grad_accum = 1
    spec.checkpoint.resume = False
    steps = max(steps, WARMUP + 3)
    loader = make_loader(spec, "train", 0, 1)
    batches = take(loader, min(steps, loader.batches_per_epoch))
    times: dict[str, list[float]] = {"engine": [], "engine_mem": [], "bare": []}
    waits = []
    for _ in range(rounds):
        result = train(spec, max_steps=steps, dry_run=True, use_gpu=False)
        times["engine"] += result.step_times[WARMUP:]
        waits.append(result.metrics.get("data_wait_frac", float("nan")))
        result = train(spec, max_steps=steps, dry_run=True, use_gpu=False,
                       train_source=InMemorySource(batches), val_source=None)
        times["engine_mem"] += result.step_times[WARMUP:]
        times["bare"] += _bare_loop(spec, batches, steps)[WARMUP:]
    b = spec.data.batch_size
    sps = {name: b / statistics.median(values) for name, values in times.items()}
    return [{
        "job": spec.name, "steps_timed": len(times["bare"]), "batch": b,
        "loader_workers": spec.data.loader_workers,
        "engine_samples_per_s": sps["engine"], "engine_mem_samples_per_s": sps["engine_mem"],
        "bare_samples_per_s": sps["bare"],
        "engine_vs_bare": sps["engine"] / sps["bare"],
        "engine_mem_vs_bare": sps["engine_mem"] / sps["bare"],
        "engine_data_wait_frac": statistics.fmean(waits),
        "threads": torch.get_num_threads(),
    }]
