"""`phmscale bench step`: the full engine against a bare PyTorch loop, side by side.

Engine: `phmscale.train.loop.train` — DeepSpeed, the WebDataset loader, meters, hooks.
Bare: the same model (same init), the same batches already in memory, plain torch AdamW,
`loss.backward(); clip; step`. Both run in this process, one after the other, each with
warm-up steps excluded, and the ratio is of median step times.
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


def run(spec: JobSpec, steps: int = 30) -> list[dict[str, Any]]:
    """One row: engine and bare samples/s, their ratio, and the engine's data-wait share."""
    from phmscale.data import make_loader
    from phmscale.train.loop import train
    from phmscale.train.memory import take

    spec = spec.model_copy(deep=True)
    spec.train.grad_accum = 1
    spec.checkpoint.resume = False
    steps = max(steps, WARMUP + 3)
    result = train(spec, max_steps=steps, dry_run=True, use_gpu=False)
    engine_times = result.step_times[WARMUP:]
    loader = make_loader(spec, "train", 0, 1)
    batches = take(loader, min(steps, loader.batches_per_epoch))
    bare_times = _bare_loop(spec, batches, steps)[WARMUP:]
    b = spec.data.batch_size
    engine_sps = b / statistics.median(engine_times)
    bare_sps = b / statistics.median(bare_times)
    wait = result.metrics.get("data_wait_frac", float("nan"))
    return [{
        "job": spec.name, "steps_timed": len(engine_times), "batch": b,
        "engine_samples_per_s": engine_sps, "bare_samples_per_s": bare_sps,
        "engine_vs_bare": engine_sps / bare_sps, "engine_data_wait_frac": wait,
        "threads": torch.get_num_threads(),
    }]
