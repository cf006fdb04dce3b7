"""The training loop every launcher calls: local, Ray Train workers, torchrun under TorchX.

It reads its rank from the environment, builds the model and the loader, wraps them in a
DeepSpeed engine, resumes from the newest complete checkpoint, and reports through hooks. It
does not know which launcher started it.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from phmscale.errors import InvalidInputError
from phmscale.spec import JobSpec
from phmscale.train import checkpoint as ckpt
from phmscale.train.config import check_deepspeed_config, deepspeed_config, lr_lambda
from phmscale.train.dist import DistEnv, all_reduce_mean, all_reduce_sum, dist_env, init_distributed
from phmscale.train.hooks import Hooks, RunInfo
from phmscale.train.meters import Peak, StepMeter, peak_memory_bytes, resolve_peak
from phmscale.train.schedule import LambdaSchedule

Batch = tuple[torch.Tensor, torch.Tensor]


class BatchSource(Protocol):
    """What the loop needs of a loader (phmscale.data.loader.ShardLoader is one)."""

    batches_per_epoch: int

    def stream(self, start_batch: int = 0) -> Iterator[Batch]: ...

    def iterate(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]: ...


@dataclass
class TrainResult:
    status: str  # completed | interrupted | dry_run
    step: int
    start_step: int
    wall_s: float
    metrics: dict[str, float] = field(default_factory=dict)  # the last logging window
    eval: dict[str, float] = field(default_factory=dict)  # the last evaluation
    best_quality: float | None = None
    run_id: str | None = None
    checkpoint: str | None = None
    peak: Peak | None = None
    peak_memory_bytes: int = 0
    train_flops_per_sample: float = 0.0
    step_times: list[float] = field(default_factory=list)


def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for both tasks: (B, C) vs (B,) or (B, T, V) vs (B, T)."""
    return F.cross_entropy(logits.float().flatten(0, -2), y.flatten())


class _StopFlag:
    """SIGINT/SIGTERM ask the loop to checkpoint and stop at the next step boundary."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():  # Ray runs us in a thread
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:  # a second Ctrl-C means now
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _quality_name(spec: JobSpec) -> str:
    return "val_bpb" if spec.model.task == "causal_lm" else "val_accuracy"


@torch.no_grad()
def evaluate(engine: Any, spec: JobSpec, source: BatchSource, env: DistEnv,
             dtype: torch.dtype) -> dict[str, float]:
    """Loss and quality over the validation split (sharded over ranks, summed)."""
    engine.eval()
    limit = spec.train.eval_batches or source.batches_per_epoch
    loss_sum = correct = count = 0.0
    for i, (x, y) in enumerate(source.iterate(epoch=0)):
        if i >= limit:
            break
        x = x.to(env.device, dtype if x.is_floating_point() else None)
        y = y.to(env.device)
        logits = engine(x).float()
        loss_sum += F.cross_entropy(logits.flatten(0, -2), y.flatten(), reduction="sum").item()
        count += y.numel()
        if spec.model.task == "classify":
            correct += (logits.argmax(-1) == y).sum().item()
    engine.train()
    loss_sum, correct, count = all_reduce_sum([loss_sum, correct, count], env)
    count = max(count, 1.0)
    out = {"val_loss": loss_sum / count}
    if spec.model.task == "causal_lm":
        out["val_bpb"] = loss_sum / count / math.log(2)  # nats per byte → bits per byte
    else:
        out["val_accuracy"] = correct / count
    return out


def _step_seed(seed: int, rank: int, step: int) -> int:
    # Re-seeding every step makes dropout exact across a resume without saving RNG state.
    return (seed * 1_000_003 + rank * 7919 + step) % (2**63)


def train(
    spec: JobSpec,
    *,
    hooks: Hooks | None = None,
    max_steps: int | None = None,
    dry_run: bool = False,
    peak_flops: float | None = None,
    train_source: BatchSource | None = None,
    val_source: BatchSource | None = None,
    use_gpu: bool | None = None,
) -> TrainResult:
    """Train `spec` on this rank. `max_steps` stops early (dry runs, tests); sources default
    to the WebDataset loader for this rank."""
    if use_gpu is None:  # launchers: the spec decides; `phmscale run` passes its own choice
        use_gpu = torch.cuda.is_available() and spec.resources.gpus_per_worker > 0
    env = dist_env(use_gpu)
    if env.device.type == "cpu":  # before DeepSpeed's import picks (and warns about) one
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed
    from deepspeed.utils import logger as ds_logger

    ds_logger.setLevel(logging.WARNING)  # its INFO lines per engine/checkpoint drown the bar

    from phmscale.models import build_model
    from phmscale.models.flops import train_flops_per_sample

    hooks = hooks or Hooks()
    if "://" in spec.checkpoint_dir and not dry_run:
        raise InvalidInputError(
            f"checkpoint.dir={spec.checkpoint_dir}: the engine writes local (or mounted shared) "
            "paths; object-store URLs go through `phmscale submit` (Ray Train storage)"
        )
    config = deepspeed_config(spec, env.world_size)
    check_deepspeed_config(config)
    init_distributed(env)

    torch.manual_seed(spec.train.seed)  # identical init on every rank
    model = build_model(spec.model)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(spec.train.precision,
                                                                 torch.float32)
    # DeepSpeed casts parameters to bf16/fp16 but leaves buffers (fixed algebra rules A,
    # BatchNorm statistics) in fp32; a layer mixing the two would fail its first matmul.
    model.to(dtype)
    schedule = None if "scheduler" in config else (
        lambda opt: LambdaSchedule(opt, lr_lambda(spec))
    )
    engine, _, _, scheduler = deepspeed.initialize(
        model=model,
        model_parameters=[p for p in model.parameters() if p.requires_grad],
        config=config,
        lr_scheduler=schedule,
    )

    start_step, run_id = 0, None
    latest = ckpt.latest_checkpoint(spec.checkpoint_dir) if spec.checkpoint.resume else None
    if latest is not None and not dry_run:
        client = ckpt.load(engine, latest)
        start_step, run_id = int(client["step"]), client.get("run_id")

    if train_source is None or (val_source is None and spec.data.val):
        from phmscale.data import make_loader

        train_source = train_source or make_loader(spec, "train", env.rank, env.world_size)
        if spec.data.val and val_source is None:
            val_source = make_loader(spec, "val", env.rank, env.world_size)

    flops_per_sample = float(train_flops_per_sample(spec.model))  # = 3 × forward
    peak = resolve_peak(env.device, spec.train.precision, peak_flops)
    info = RunInfo(spec, env.rank, env.world_size, start_step, latest is not None, run_id,
                   deepspeed_config=config, model=model)
    run_id = hooks.on_start(info) or run_id

    total = spec.train.steps if max_steps is None else min(spec.train.steps, max_steps)
    accum, batch = spec.train.grad_accum, spec.data.batch_size
    tokens_per_sample = spec.model.seq_len if spec.model.task == "causal_lm" else 1
    result = TrainResult("completed", start_step, start_step, 0.0, run_id=run_id, peak=peak,
                         train_flops_per_sample=flops_per_sample)
    meter = StepMeter()
    stream = train_source.stream(start_batch=start_step * accum)
    quality = _quality_name(spec)
    began = time.perf_counter()
    step = start_step

    def save(at: int) -> None:
        client_state = {"step": at, "data_position": at * accum, "run_id": run_id,
                        "seed": spec.train.seed, "world_size": env.world_size}
        ref = ckpt.save(engine, spec.checkpoint_dir, at, client_state, env,
                        spec.checkpoint.keep)
        result.checkpoint = str(ref.path)
        hooks.on_checkpoint(at, str(ref.path))

    try:
        with _StopFlag() as stop:
            for step in range(start_step, total):
                if env.world_size > 1:  # every rank must agree to stop at the same step
                    stop.requested = all_reduce_sum([float(stop.requested)], env)[0] > 0
                if stop.requested:
                    result.status = "interrupted"
                    break
                torch.manual_seed(_step_seed(spec.train.seed, env.rank, step))
                t0 = time.perf_counter()
                wait, loss_value = 0.0, 0.0
                for _ in range(accum):
                    tw = time.perf_counter()
                    x, y = next(stream)
                    wait += time.perf_counter() - tw
                    x = x.to(env.device, dtype if x.is_floating_point() else None)
                    loss = loss_fn(engine(x), y.to(env.device))
                    engine.backward(loss)
                    engine.step()  # DeepSpeed steps the optimizer at the accumulation boundary
                    loss_value += loss.item() / accum
                dt = time.perf_counter() - t0
                result.step_times.append(dt)
                meter.add(batch * accum, batch * accum * tokens_per_sample, dt, wait, loss_value)
                done = step + 1
                last = done == total
                if done % spec.train.log_every == 0 or last:
                    metrics = meter.summary(env.world_size, flops_per_sample, peak)
                    metrics["loss"], metrics["data_wait_frac"] = all_reduce_mean(
                        [metrics["loss"], metrics["data_wait_frac"]], env)
                    metrics["lr"] = float(scheduler.get_last_lr()[0]) if scheduler else 0.0
                    norm = engine.get_global_grad_norm()
                    if norm is not None:
                        metrics["grad_norm"] = float(norm)
                    hooks.on_metrics(done, metrics)
                    result.metrics = metrics
                    meter.reset()
                if val_source is not None and (done % spec.train.eval_every == 0 or last):
                    result.eval = evaluate(engine, spec, val_source, env, dtype)
                    q = result.eval[quality]
                    better = (result.best_quality is None or
                              (q < result.best_quality if quality == "val_bpb"
                               else q > result.best_quality))
                    result.best_quality = q if better else result.best_quality
                    hooks.on_eval(done, result.eval)
                if not dry_run and (done % spec.checkpoint.every == 0 or last):
                    save(done)
                result.step = done
            if result.status == "interrupted" and not dry_run and result.step > start_step:
                if result.checkpoint is None or not result.checkpoint.endswith(
                        ckpt.tag_for(result.step)):
                    save(result.step)
    except BaseException:
        result.status = "failed"
        result.wall_s = time.perf_counter() - began
        hooks.on_end(result)  # the tracking run is closed as FAILED, never lost
        raise
    if dry_run:
        result.status = "dry_run"
    result.wall_s = time.perf_counter() - began
    result.peak_memory_bytes = peak_memory_bytes(env.device)
    hooks.on_end(result)
    return result
