"""The training loop under every launcher (through `train.job.run_job`): local, Ray Train
workers, torchrun under TorchX.

It reads its rank from the environment, builds the DeepSpeed engine (engine.py) and the
loader, resumes from the newest complete checkpoint, and reports through hooks. It does not
know which launcher started it: a launcher that keeps checkpoints elsewhere than the spec's
`checkpoint.dir` (Ray Train's worker-local scratch) passes `checkpoint_dir`, and the spec the
hooks log stays the one the user wrote.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from phmscale.errors import InvalidInputError
from phmscale.spec import JobSpec
from phmscale.train import checkpoint as ckpt
from phmscale.train.dist import DistEnv, all_reduce_mean, all_reduce_sum
from phmscale.train.dist import use_gpu as choose_gpu
from phmscale.train.engine import EngineParts, build_engine
from phmscale.train.evaluate import BatchSource, evaluate, is_better, loss_fn, quality_name
from phmscale.train.hooks import Hooks, RunInfo
from phmscale.train.meters import CommTimer, Peak, StepMeter, peak_memory_bytes, resolve_peak
from phmscale.train.prune import Pruner

__all__ = ["BatchSource", "TrainResult", "evaluate", "loss_fn", "train"]

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class TrainResult:
    status: str  # completed | interrupted | dry_run | failed
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
    wait_times: list[float] = field(default_factory=list)  # of each step, waiting for data
    checkpoint_stalls: list[float] = field(default_factory=list)  # of each save, loop blocked


class _StopFlag:
    """A stop asked for from outside: the launcher's event (Ray's `phmscale stop`, set from
    another thread) or, when the loop runs in the main thread, SIGINT/SIGTERM (Ctrl-C,
    torchrun and Kubernetes passing on a stop or preemption). The loop checkpoints and stops
    at the next step boundary."""

    def __init__(self, event: threading.Event | None = None) -> None:
        self.event = event or threading.Event()
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    @requested.setter
    def requested(self, value: bool) -> None:
        if value:
            self.event.set()

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():  # Ray runs us in a thread
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        # A second Ctrl-C means now. A second SIGTERM does not: stops arrive twice by design
        # (TorchX's local_cwd signals the process group, then torchrun passes it on).
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.event.set()

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _step_seed(seed: int, rank: int, step: int) -> int:
    # Re-seeding every step makes dropout exact across a resume without saving RNG state.
    return (seed * 1_000_003 + rank * 7919 + step) % (2**63)


class _Run:
    """One call of `train`: the engine, where checkpoints go, the hooks, and the result."""

    def __init__(self, spec: JobSpec, parts: EngineParts, hooks: Hooks, checkpoint_dir: str,
                 dry_run: bool, result: TrainResult, stop: threading.Event | None = None):
        self.spec, self.parts, self.hooks, self.stop = spec, parts, hooks, stop
        self.resume_from = spec.checkpoint.resume  # what checkpoint_dir holds is ours to resume
        self.env, self.engine = parts.env, parts.engine
        self.checkpoint_dir, self.dry_run, self.result = checkpoint_dir, dry_run, result
        self.accum = spec.train.grad_accum
        self.meter = StepMeter()
        self.comm = CommTimer(self.engine)
        # On GPU each bucket's kernels finish before its clock stops (meters.py); the
        # syncs cost the launch overlap at three points a micro-step: microseconds against
        # the tens of milliseconds of a step worth splitting.
        cuda = self.env.device.type == "cuda"
        self.sync = (lambda: torch.cuda.synchronize(self.env.device)) if cuda else (lambda: None)
        self.pruner = Pruner(spec, parts.model, spec.train.zero_stage)
        self.snap = None  # the SnapshotEngine writing saves in a thread (checkpoint.async_save)
        if spec.checkpoint.async_save and not dry_run:
            from phmscale.train.async_save import install

            self.snap = install(self.engine)
        self.pending: tuple[ckpt.PendingSave, float] | None = None  # begun save, its stall
        # Whose checkpoints these are (the marker's fields), worked out once: masking the
        # identity costs ~3 ms, as much as the rest of a save's stall (docs/benchmarks.md).
        self.owner = {"job": spec.name, "fingerprint": spec.fingerprint(),
                      "identity": spec.identity(shown=True)}

    def resume(self) -> tuple[int, str | None, bool]:
        """(start step, tracking run id from the checkpoint, resumed?)."""
        if self.dry_run or not self.resume_from:
            return 0, None, False
        latest = ckpt.latest_checkpoint(self.checkpoint_dir)
        if latest is None:
            return 0, None, False
        owner = ckpt.owner(latest)  # the last line of defence: the run folder checked first
        if owner.get("fingerprint") not in (None, self.spec.fingerprint()):
            from phmscale.train.run_folder import mismatch_message

            raise InvalidInputError(mismatch_message(self.spec, latest.path, owner))
        client = ckpt.load(self.engine, latest)
        self.pruner.refresh()  # the checkpoint's masks
        return int(client["step"]), client.get("run_id"), True

    def step(self, stream: Iterator[Batch], step: int) -> None:
        """One optimizer step over `accum` micro-batches; feeds the meter."""
        env, engine = self.env, self.engine
        torch.manual_seed(_step_seed(self.spec.train.seed, env.rank, step))
        split = {"data_wait": 0.0, "forward_backward": 0.0, "optimizer": 0.0}
        loss_value = 0.0
        t0 = time.perf_counter()
        for _ in range(self.accum):
            t_data = time.perf_counter()
            x, y = next(stream)
            t_compute = time.perf_counter()
            x = x.to(env.device, self.parts.dtype if x.is_floating_point() else None)
            loss = loss_fn(engine(x), y.to(env.device))
            engine.backward(loss)
            loss_value += loss.item() / self.accum
            self.sync()
            t_step = time.perf_counter()
            engine.step()  # DeepSpeed steps the optimizer at the accumulation boundary
            self.sync()
            t_end = time.perf_counter()
            split["data_wait"] += t_compute - t_data
            split["forward_backward"] += t_step - t_compute
            split["optimizer"] += t_end - t_step
        dt = time.perf_counter() - t0
        split["comm"] = self.comm.take()  # inside backward's wall time: moved out of it
        split["forward_backward"] -= split["comm"]
        self.result.step_times.append(dt)
        self.result.wait_times.append(split["data_wait"])
        samples = self.spec.data.batch_size * self.accum
        tokens = self.spec.model.seq_len if self.spec.model.task == "causal_lm" else 1
        self.meter.add(samples, samples * tokens, dt, split, loss_value)

    def log(self, done: int) -> None:
        """The logging window's metrics, the same all-reduced values on every rank."""
        r = self.result
        metrics = self.meter.summary(self.env.world_size, r.train_flops_per_sample, r.peak)
        metrics["memory_peak_bytes"] = float(peak_memory_bytes(self.env.device))
        # Every rank's own figures, averaged (a slow rank shows as a higher mean); the rates
        # are the job's already. Saves happen at the same steps everywhere, so every rank
        # holds the same keys.
        keys = [k for k in metrics if k == "loss" or k.endswith(("_frac", "_s", "_bytes"))
                and not k.endswith("per_s")]
        for key, value in zip(keys, all_reduce_mean([metrics[k] for k in keys], self.env),
                              strict=True):
            metrics[key] = value
        scheduler = self.parts.scheduler
        metrics["lr"] = float(scheduler.get_last_lr()[0]) if scheduler else 0.0
        norm = self.engine.get_global_grad_norm()
        if norm is not None:
            metrics["grad_norm"] = float(norm)
        if self.pruner.enabled:
            state = self.pruner.state
            metrics["element_sparsity"] = state.sparsity
            metrics["params_nonzero"] = float(state.params_nonzero)
        self.hooks.on_metrics(done, metrics)
        r.metrics = metrics
        self.meter.reset()

    def evaluate(self, done: int, source: BatchSource) -> None:
        r = self.result
        r.eval = evaluate(self.engine, self.spec, source, self.env, self.parts.dtype)
        q = r.eval[quality_name(self.spec)]
        if is_better(self.spec, q, r.best_quality):
            r.best_quality = q
        self.hooks.on_eval(done, r.eval)

    def save(self, at: int) -> None:
        """Begin a save of step `at`; with a snapshot engine its files are written in a thread
        and `complete` runs once every rank's are on disk, a step or more later."""
        self.complete()  # a second save waits for the first
        t0 = time.perf_counter()
        client_state = {"step": at, "data_position": at * self.accum,
                        "run_id": self.result.run_id, "seed": self.spec.train.seed,
                        "world_size": self.env.world_size}
        pending = ckpt.begin(self.engine, self.checkpoint_dir, at, client_state, self.env)
        blocked = time.perf_counter() - t0
        self.meter.blocked(blocked)
        self.pending = (pending, blocked)
        if self.snap is None:
            self.complete()

    def written(self) -> bool:
        """This rank's files of the save in flight are on disk (True when none is)."""
        return self.pending is None or self.snap is None or self.snap.written()

    def complete(self) -> None:
        """Finish the save in flight (collective): wait for this rank's writer, mark, rename,
        rotate, run the checkpoint hooks. Each part's blocked time counts as the save's stall."""
        if self.pending is None:
            return
        (pending, blocked), self.pending = self.pending, None
        t0 = time.perf_counter()
        write_s = self.snap.wait() if self.snap is not None else 0.0
        owner = {**self.owner, "run_id": self.result.run_id}
        ref = ckpt.finish(pending, self.env, self.spec.checkpoint.keep, owner)
        self.result.checkpoint = str(ref.path)
        self.hooks.on_checkpoint(pending.step, str(ref.path))
        here = time.perf_counter() - t0
        self.meter.blocked(here)
        self.meter.saved(blocked + here, write_s)
        self.result.checkpoint_stalls.append(blocked + here)

    def abandon(self) -> None:
        """A failed run: let the writer finish its files (never half written), but leave them
        aside, unmarked — the last complete checkpoint stays the one to resume from."""
        if self.pending is not None and self.snap is not None:
            self.pending = None
            try:
                self.snap.wait()
            except RuntimeError:
                pass  # the run's own error is the one to raise

    def save_on_interrupt(self) -> None:
        """The save in flight is finished; an interrupted run then saves where it stopped,
        unless that step is saved already, and waits for it: a run never ends with a save
        unfinished."""
        r = self.result
        self.complete()  # the save in flight first: it may be this very step
        if r.status != "interrupted" or self.dry_run or r.step <= r.start_step:
            return
        if r.checkpoint is None or not r.checkpoint.endswith(ckpt.tag_for(r.step)):
            self.save(r.step)
            self.complete()

    def run(self, total: int, train_source: BatchSource, val_source: BatchSource | None) -> None:
        spec, env, r = self.spec, self.env, self.result
        stream = train_source.stream(start_batch=r.start_step * self.accum)
        with _StopFlag(self.stop) as stop:
            for step in range(r.start_step, total):
                # Every rank must agree to stop at the same step, and to finish a save only
                # once all have written it: one collective for both.
                flags = [float(stop.requested), float(not self.written())]
                if env.world_size > 1:
                    flags = all_reduce_sum(flags, env)
                    stop.requested = flags[0] > 0
                if self.pending is not None and flags[1] == 0:
                    self.complete()
                if stop.requested:
                    r.status = "interrupted"
                    break
                self.step(stream, step)
                done = step + 1
                self.pruner.after_step(done)  # before eval and save: both see the new masks
                last = done == total
                if done % spec.train.log_every == 0 or last:
                    self.log(done)
                if val_source is not None and (done % spec.train.eval_every == 0 or last):
                    self.evaluate(done, val_source)
                if not self.dry_run and (done % spec.checkpoint.every == 0 or last):
                    self.save(done)
                r.step = done
            self.save_on_interrupt()


def _sources(spec: JobSpec, env: DistEnv, train_source: BatchSource | None,
             val_source: BatchSource | None) -> tuple[BatchSource, BatchSource | None]:
    """The given sources, else this rank's WebDataset loaders."""
    if train_source is not None and (val_source is not None or not spec.data.val):
        return train_source, val_source
    from phmscale.data.loader import make_loader
    from phmscale.data.prepare import prepare_data

    prepare_data(spec)  # built-ins packed on first use (every rank; the first packs, under a lock)
    rank, world = env.rank, env.world_size
    train_source = train_source or make_loader(spec, "train", rank, world)
    if spec.data.val and val_source is None:
        val_source = make_loader(spec, "val", rank, world)
    return train_source, val_source


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
    checkpoint_dir: str | None = None,
    stop: threading.Event | None = None,
    run_id: str | None = None,
    resume: bool | None = None,
) -> TrainResult:
    """Train `spec` on this rank: the engine's part of a job (`phmscale.train.job.run_job`
    adds the launcher's: the run folder, tracking, device choice). `max_steps` stops early
    (dry runs, tests); sources default to the WebDataset loader for this rank; checkpoints go
    to `checkpoint_dir`, by default the spec's (`spec.checkpoint_dir`); `stop`, once set,
    checkpoints and stops at the next step; `run_id` is the tracking run to reopen when the
    checkpoint names none (a job restarted before its first checkpoint); `resume` overrides
    checkpoint.resume (Ray: its scratch folder only ever holds this submission's saves)."""
    if use_gpu is None:  # as a cluster rank would (run_job passes the launcher's choice)
        use_gpu = choose_gpu(spec, "worker")
    checkpoint_dir = checkpoint_dir or spec.checkpoint_dir
    if "://" in checkpoint_dir and not dry_run:
        raise InvalidInputError(
            f"checkpoint.dir={spec.mask(checkpoint_dir)}: the engine writes local (or mounted shared) "
            "paths; object-store URLs go through `phmscale submit` (Ray Train storage)"
        )
    from phmscale.models.flops import train_flops_per_sample

    hooks = hooks or Hooks()
    parts = build_engine(spec, use_gpu)
    env = parts.env
    result = TrainResult("completed", 0, 0, 0.0,
                         peak=resolve_peak(env.device, spec.train.precision, peak_flops),
                         train_flops_per_sample=float(train_flops_per_sample(spec.model)))
    run = _Run(spec, parts, hooks, checkpoint_dir, dry_run, result, stop)
    if resume is not None:
        run.resume_from = resume
    result.start_step, saved_run_id, resumed = run.resume()
    run_id = saved_run_id or (run_id if spec.checkpoint.resume and not dry_run else None)
    result.step = result.start_step
    train_source, val_source = _sources(spec, env, train_source, val_source)
    info = RunInfo(spec, env.rank, env.world_size, result.start_step, resumed, run_id,
                   deepspeed_config=parts.config, model=parts.model)
    result.run_id = hooks.on_start(info) or run_id
    total = spec.train.steps if max_steps is None else min(spec.train.steps, max_steps)
    began = time.perf_counter()
    try:
        run.run(total, train_source, val_source)
    except BaseException:
        run.abandon()
        result.status = "failed"
        result.wall_s = time.perf_counter() - began
        hooks.on_end(result)  # the tracking run is closed as FAILED, never lost
        raise
    if dry_run:
        result.status = "dry_run"
    result.wall_s = time.perf_counter() - began
    result.peak_memory_bytes = parts.memory.peak_bytes()  # tensors (train/tensor_peak.py)
    hooks.on_end(result)
    return result
