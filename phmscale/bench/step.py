"""`phmscale bench step`: the full engine against a bare PyTorch loop, side by side.

The contenders, all in this process:
- engine: `phmscale.train.loop.train` — DeepSpeed, the WebDataset loader, meters, hooks;
- engine_mem: the same engine on the same batches held in memory (no loader): what DeepSpeed
  and the loop cost on their own;
- bare: the same model (same init) on the batches in memory, plain torch AdamW,
  `loss.backward(); clip; step`.

Paired rounds: each round runs every contender once (`steps` steps, by default the job's own up
to 300, the first `WARMUP` not timed), in an order rotated from round to round, and a ratio is
the median over rounds of that round's throughput ratio (samples/s over the timed steps, so a
slow first batch of an epoch counts in full, as it does in a job). A shared machine's speed
drifts within seconds (by a third between two runs: docs/benchmarks.md, "bench step"), so a
contender is only ever compared with the others run beside it; `engine_vs_bare_spread` is the
max − min of the rounds' engine ratios.

The engine's loader reads in data.loader_workers processes beside the step (the quickstart: one
worker on the 2 cores the step's threads use). Its first epoch reads the tars; a job that asks
for data.memory_cache_mib has later epochs served from the worker's memory. The first epoch's
ratio is also given apart (`engine_first_epoch_vs_bare`).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from phmscale.spec import JobSpec

WARMUP = 3
MAX_STEPS = 300  # 4 contenders × 6 rounds × 300 steps: minutes for the quickstart's small steps


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


def _per_round(rounds: list[dict[str, list[float]]], name: str) -> list[float]:
    """Each round's throughput of `name` ÷ bare's: bare's mean step time ÷ `name`'s (> 1:
    faster than bare)."""
    return [statistics.fmean(r["bare"]) / statistics.fmean(r[name])
            for r in rounds if r.get(name)]


def _ratio(rounds: list[dict[str, list[float]]], name: str) -> float:
    """The median over rounds of `_per_round`."""
    per_round = _per_round(rounds, name)
    return statistics.median(per_round) if per_round else float("nan")


def default_steps(spec: JobSpec) -> int:
    """Steps per contender and round: the job's own, up to MAX_STEPS. The engine's cost
    changes over a job (the quickstart reads its tars in epoch 0 and serves 11 more epochs
    from memory), so a window shorter than the job weighs its start-up wrongly: at 60 steps
    the quickstart's read epoch is 42% of the timed steps, against 8% of the job."""
    return min(spec.train.steps, MAX_STEPS)


def run(spec: JobSpec, steps: int | None = None, rounds: int = 6) -> list[dict[str, Any]]:
    """One row: samples/s of the contenders, the engine's ratios to bare (all timed steps,
    epoch 0 read from the tars, later epochs) and its data-wait shares."""
    from phmscale.data.loader import make_loader
    from phmscale.data.prepare import prepare_data
    from phmscale.train.loop import train
    from phmscale.train.memory import InMemorySource, take

    spec = spec.model_copy(deep=True)
    spec.train.grad_accum = 1
    spec.checkpoint.resume = False
    steps = max(default_steps(spec) if steps is None else steps, WARMUP + 3)
    prepare_data(spec)
    loader = make_loader(spec, "train", 0, 1)
    per_epoch = loader.batches_per_epoch
    batches = take(loader, min(steps, per_epoch))
    # (part, first step, end) of an engine run's step times, for its ratios and waits.
    parts = [("", WARMUP, steps), ("_first_epoch", WARMUP, per_epoch)]

    def engine(name: str) -> dict[str, tuple[list[float], list[float]]]:
        """{name + part: (step times, data waits)} of one engine run."""
        kw: dict[str, Any] = {}
        if name == "engine_mem":
            kw = {"train_source": InMemorySource(batches), "val_source": None}
        result = train(spec, max_steps=steps, dry_run=True, use_gpu=False, **kw)
        if name == "engine_mem":
            return {name: (result.step_times[WARMUP:], result.wait_times[WARMUP:])}
        return {name + part: (result.step_times[lo:hi], result.wait_times[lo:hi])
                for part, lo, hi in parts}

    names = ["engine", "engine_mem", "bare"]
    timed: list[dict[str, list[float]]] = []
    waits: dict[str, list[float]] = {}  # name → [data wait, step time], summed over rounds
    for i in range(rounds):
        got: dict[str, list[float]] = {}
        k = i % len(names)
        for name in names[k:] + names[:k]:  # rotated: none always runs first
            if name == "bare":
                got["bare"] = _bare_loop(spec, batches, steps)[WARMUP:]
                continue
            for part, (step_times, wait_times) in engine(name).items():
                got[part] = step_times
                total = waits.setdefault(part, [0.0, 0.0])
                total[0] += sum(wait_times)
                total[1] += sum(step_times)
        timed.append(got)
    b = spec.data.batch_size
    engine_rounds = _per_round(timed, "engine")
    row: dict[str, Any] = {
        "job": spec.name, "rounds": rounds, "steps_timed": sum(len(r["bare"]) for r in timed),
        "batch": b, "loader_workers": spec.data.loader_workers, "batches_per_epoch": per_epoch,
        "memory_cache_mib": spec.data.memory_cache_mib,
    }
    for name in names:
        row[f"{name}_samples_per_s"] = b / statistics.fmean([t for r in timed for t in r[name]])
    row["engine_vs_bare"] = statistics.median(engine_rounds)
    row["engine_vs_bare_spread"] = max(engine_rounds) - min(engine_rounds)
    for part in waits:  # every engine part timed, in contender order
        if part != "engine":  # engine_vs_bare is above, beside its spread
            row[f"{part}_vs_bare"] = _ratio(timed, part)
    for part, (wait, total) in waits.items():
        if part != "engine_mem":  # its batches are in memory: nothing to wait for
            row[f"{part}_data_wait_frac"] = wait / max(total, 1e-9)
    row["threads"] = torch.get_num_threads()
    return [row]
