"""`phmscale bench step`: the full engine against a bare PyTorch loop, side by side.

Three contenders, all in this process:
- engine: `phmscale.train.loop.train` — DeepSpeed, the WebDataset loader, meters, hooks;
- engine_mem: the same engine on the same batches held in memory (no loader): what DeepSpeed
  and the loop cost on their own;
- bare: the same model (same init) on the batches in memory, plain torch AdamW,
  `loss.backward(); clip; step`.

Paired rounds: each round runs every contender once (`steps` steps, the first `WARMUP` not
timed), in an order rotated from round to round, and a ratio is the median over rounds of that
round's ratio of median step times. The machine's speed drifts by seconds here (a 2-core VM: the
same contender's median step went from 13.8 to 18.1 ms between two runs a few seconds apart),
so a contender is only ever compared with the others run beside it; `engine_vs_bare_spread`
is the max − min of the rounds' engine ratios.

The engine's epoch 0 reads and decodes every sample from the tars; from epoch 1 on a loader
that holds its decoded shards (held.py, `held`) serves them from memory. Their ratios are given
apart (`engine_read_vs_bare`, `engine_held_vs_bare`), since a bench round is a couple of epochs
while a job is many: the quickstart runs 12 epochs, 1 of them read.
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


def _ratio(rounds: list[dict[str, list[float]]], name: str) -> float:
    """Median over rounds of bare's median step time ÷ `name`'s (> 1: faster than bare)."""
    per_round = [statistics.median(r["bare"]) / statistics.median(r[name])
                 for r in rounds if r.get(name)]
    return statistics.median(per_round) if per_round else float("nan")


def run(spec: JobSpec, steps: int = 60, rounds: int = 6) -> list[dict[str, Any]]:
    """One row: samples/s of the three contenders, the engine's ratios to bare (all timed
    steps, epoch 0 read from the tars, later epochs) and its data-wait shares."""
    from phmscale.data import make_loader
    from phmscale.train.loop import train
    from phmscale.train.memory import InMemorySource, take

    spec = spec.model_copy(deep=True)
    spec.train.grad_accum = 1
    spec.checkpoint.resume = False
    steps = max(steps, WARMUP + 3)
    loader = make_loader(spec, "train", 0, 1)
    per_epoch = loader.batches_per_epoch
    batches = take(loader, min(steps, per_epoch))

    def engine(memory: bool) -> tuple[list[float], list[float]]:
        kw: dict[str, Any] = {}
        if memory:
            kw = {"train_source": InMemorySource(batches), "val_source": None}
        result = train(spec, max_steps=steps, dry_run=True, use_gpu=False, **kw)
        return result.step_times, result.wait_times

    timed: list[dict[str, list[float]]] = []
    waits = {"engine": [0.0, 0.0], "engine_read": [0.0, 0.0], "engine_held": [0.0, 0.0]}
    names = ["engine", "engine_mem", "bare"]
    for i in range(rounds):
        got: dict[str, list[float]] = {}
        for name in names[i % 3:] + names[: i % 3]:  # rotated: none always runs first
            if name == "bare":
                got["bare"] = _bare_loop(spec, batches, steps)[WARMUP:]
            elif name == "engine_mem":
                got["engine_mem"] = engine(memory=True)[0][WARMUP:]
            else:
                step_times, wait_times = engine(memory=False)
                for part, lo, hi in (("engine", WARMUP, steps),
                                     ("engine_read", WARMUP, per_epoch),
                                     ("engine_held", max(WARMUP, per_epoch), steps)):
                    got[part] = step_times[lo:hi]
                    waits[part][0] += sum(wait_times[lo:hi])
                    waits[part][1] += sum(step_times[lo:hi])
        timed.append(got)
    b = spec.data.batch_size

    def sps(name: str) -> float:
        return b / statistics.median([t for r in timed for t in r[name]])

    engine_rounds = [statistics.median(r["bare"]) / statistics.median(r["engine"])
                     for r in timed]
    held = loader.hold_bytes > 0 and steps > per_epoch
    return [{
        "job": spec.name, "rounds": rounds, "steps_timed": sum(len(r["bare"]) for r in timed),
        "batch": b, "loader_workers": spec.data.loader_workers, "batches_per_epoch": per_epoch,
        "held": held,
        "engine_samples_per_s": sps("engine"), "engine_mem_samples_per_s": sps("engine_mem"),
        "bare_samples_per_s": sps("bare"),
        "engine_vs_bare": _ratio(timed, "engine"),
        "engine_vs_bare_spread": max(engine_rounds) - min(engine_rounds),
        "engine_read_vs_bare": _ratio(timed, "engine_read"),
        "engine_held_vs_bare": _ratio(timed, "engine_held") if held else float("nan"),
        "engine_mem_vs_bare": _ratio(timed, "engine_mem"),
        "engine_data_wait_frac": waits["engine"][0] / waits["engine"][1],
        "engine_read_data_wait_frac": waits["engine_read"][0] / max(waits["engine_read"][1], 1e-9),
        "engine_held_data_wait_frac": (waits["engine_held"][0] / waits["engine_held"][1]
                                       if held else float("nan")),
        "threads": torch.get_num_threads(),
    }]
