"""What every Ray Train worker runs: restore, `run_job`, report.

Checkpoints go through Ray Train's storage, in the engine's own layout:
1. On (re)start each worker empties its scratch directory (per submission and rank, under a
   0700 per-user folder: `scratch_dir`) and, if Ray Train has a
   checkpoint for this run (`ray.train.get_checkpoint()`: the latest one reported in this run,
   or in an earlier run with the same storage_path and name), downloads it there as
   `<scratch>/checkpoints/step_XXXXXXXX/` — so the engine's `latest_checkpoint` finds it,
   `COMPLETE` marker included.
2. The engine saves every `checkpoint.every` steps into that scratch directory (each rank its
   own shards, written aside and renamed; rank 0 also the model states and the marker).
3. `RayReport.on_checkpoint` runs on every rank at the same step: each rank reports its
   `step_XXXXXXXX/` with `Checkpoint.from_directory`, under the directory name
   `step_XXXXXXXX`; Ray merges all ranks' files into `<checkpoint.dir>/<job name>/step_XXXXXXXX/`
   (RunConfig(storage_path=checkpoint.dir, name=job name); `phmscale run` keeps its own
   checkpoints directly in `<checkpoint.dir>/step_XXXXXXXX/`, so the two never mix: a ZeRO
   checkpoint of N workers is not one a single process should resume from).

Every rank calls `ray.train.report` the same number of times: once per checkpoint and once at
the end (Ray Train V2 treats report as a barrier). `RankZeroReport` sets the dashboard gauges
(`GAUGE_METRICS`: throughput, loss, the step-time split, checkpoint stalls, MFU, memory) and writes one progress line per logging window to the job's log.

The MLflow run survives worker-group restarts two ways: the run id rides in the checkpoint's
client state (the engine's doing), and, for a restart before the first checkpoint, rank 0 keeps
it in a small actor the driver owns (`JobState`) which the next rank 0 reads back (the driver
also keeps it in the run folder's run.json, for the next submission).

A stop reaches the workers through `JobState` too (`_StopPoller`): the loop checkpoints at the
current step, the MLflow run ends KILLED, and `train_fn` returns.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import ray
import ray.train

from phmscale.spec import JobSpec
from phmscale.train.checkpoint import MARKER
from phmscale.train.hooks import Hooks, RunInfo

SCRATCH_ENV = "PHMSCALE_RAY_SCRATCH"  # where workers keep local checkpoint copies
COMMIT_TIMEOUT_S = 600.0  # a controller that has not registered a checkpoint by then is gone


@ray.remote(num_cpus=0)
class JobState:
    """What the driver and the workers of one job share, in a small actor the driver owns:
    the MLflow run id (for a worker group restarted before any checkpoint), the stop request
    (`phmscale stop` reaches the driver; the workers poll it here), and the current worker
    group's actors (ended by force only if they overrun the stop's grace period).

    The driver creates it under a name made of the checkpoint storage, so a second live job
    on the same storage fails to create it: Ray's own lock, which works for object storage
    where a file lock cannot."""

    def __init__(self, run_id: str | None = None) -> None:
        self.run_id: str | None = run_id
        self.workers: dict[int, Any] = {}
        self.stopping = False

    def set(self, run_id: str) -> None:
        self.run_id = run_id

    def get(self) -> str | None:
        return self.run_id

    def request_stop(self) -> None:
        self.stopping = True

    def stop_requested(self) -> bool:
        return self.stopping

    def add_worker(self, rank: int, actor: Any) -> None:
        self.workers[rank] = actor

    def worker_actors(self) -> list[Any]:
        return list(self.workers.values())


def scratch_dir(submission_id: str, rank: int) -> Path:
    """Per submission and rank, the same across restarts (a restarted worker empties and
    reuses it rather than leaving a directory per attempt behind), never shared by two
    submissions, under a per-user folder only its owner can enter (0700)."""
    base = Path(os.environ.get(SCRATCH_ENV) or tempfile.gettempdir())
    root = base / f"phmscale-ray-{os.getuid()}"
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = root.lstat()
    if info.st_uid != os.getuid() or info.st_mode & 0o077 or not root.is_dir():
        raise RuntimeError(f"{root} is not a private directory of this user (mode "
                           f"{oct(info.st_mode & 0o777)}): remove it or set ${SCRATCH_ENV}")
    return root / submission_id / f"rank_{rank:05d}"


def run_dir(spec: JobSpec) -> str:
    """Where Ray Train keeps this job's checkpoints: RunConfig(storage_path, name)."""
    return f"{spec.checkpoint_dir.rstrip('/')}/{spec.name}"


def restore(checkpoint: Any, into: Path) -> Path | None:
    """Download a Ray Train checkpoint (`…/step_XXXXXXXX`) to `into/step_XXXXXXXX`."""
    if checkpoint is None:
        return None
    tag = Path(str(checkpoint.path).rstrip("/")).name
    target = into / tag
    checkpoint.to_directory(str(target))
    if not (target / MARKER).is_file():
        raise RuntimeError(f"Ray Train checkpoint {checkpoint.path} has no {MARKER} marker: "
                           "it was not written by phmscale's engine")
    return target


# The loop's window metrics (train/meters.py) shown on the dashboard, as Prometheus gauges
# `phmscale_<key>` (Ray's exporter adds `ray_`: `ray_phmscale_<key>`, which
# dashboards/phmscale_grafana.json charts).
GAUGE_METRICS: dict[str, str] = {
    "samples_per_s": "Training throughput, samples/s (all workers)",
    "tokens_per_s": "Training throughput, tokens/s (all workers; samples/s for classifiers)",
    "loss": "Training loss (last logging window)",
    "step_time_s": "Seconds per optimizer step (mean over ranks and the window)",
    "time_data_wait_s": "Of each step: seconds waiting for the loader",
    "time_forward_backward_s": "Of each step: forward and backward, less the reduction",
    "time_comm_s": "Of each step: gradient reduction after backward (DeepSpeed's timer)",
    "time_optimizer_s": "Of each step: optimizer step (ZeRO-1/2: with its all-gather)",
    "time_checkpoint_s": "Per step: seconds the loop was blocked by checkpoint saves",
    "checkpoint_stall_s": "Seconds the loop was blocked by each save (window mean)",
    "checkpoint_write_s": "Seconds each save's files took to write (in the background)",
    "mfu": "Model FLOPs utilisation (achieved / peak FLOP/s)",
    "flops_per_s": "Achieved training FLOP/s (all workers)",
    "memory_peak_bytes": "Peak memory of a rank (GPU allocator; CPU max RSS)",
}


class Gauges:
    """Dashboard metrics (Prometheus via Ray's metrics agent), set from rank 0, tagged by job
    and submission."""

    def __init__(self, job: str, submission_id: str):
        from ray.util.metrics import Gauge

        keys = ("job", "submission_id")
        self.tags = {"job": job, "submission_id": submission_id}
        self.step = Gauge("phmscale_step", "Optimizer steps done", tag_keys=keys)
        self.gauges = {key: Gauge(f"phmscale_{key}", text, tag_keys=keys)
                       for key, text in GAUGE_METRICS.items()}

    def set(self, step: int, metrics: dict[str, float]) -> None:
        self.step.set(step, tags=self.tags)
        for key, gauge in self.gauges.items():
            if key in metrics:
                gauge.set(metrics[key], tags=self.tags)


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}


class RayReport(Hooks):
    """Every rank, *before* the MLflow hook in the list.

    - on_start (rank 0): hand over the run id of an earlier worker group of this job when
      the checkpoint did not carry one (HookList passes it to the MLflow hook as info.run_id).
    - on_checkpoint: `ray.train.report` this rank's shard directory. Rank 0's wait until Ray
      Train has committed it is a checkpoint gate (RunInfo.checkpoint_gates) that the MLflow
      hook passes, in its flush thread, before it sends the steps up to the checkpoint: a
      worker group that dies (or a job stopped) between the engine's save and the commit has
      not logged steps that the resumed group will log again, so each step reaches MLflow
      exactly once — and the loop trains on during the commit (up to a health-check interval,
      the bulk of a save's stall under Ray before).
    - on_end: one last report (no checkpoint; the loop saved at the last step already).
    """

    def __init__(self, store: Any):
        self.store = store
        self.rank = 0
        self.last: dict[str, float] = {}
        self.last_eval: dict[str, float] = {}

    def on_start(self, info: RunInfo) -> str | None:
        self.rank = info.rank
        if info.rank == 0:
            info.checkpoint_gates.append(self.committed)
        if info.rank != 0 or info.run_id or self.store is None:
            return None
        return ray.get(self.store.get.remote())

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.last = _numbers(metrics)

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        self.last_eval = _numbers(metrics)

    def on_checkpoint(self, step: int, path: str) -> None:
        from ray.train import Checkpoint

        local = Path(path)
        local.mkdir(parents=True, exist_ok=True)  # a rank with no shard of its own (ZeRO-0)
        ray.train.report({"step": step, **self.last, **self.last_eval},
                         checkpoint=Checkpoint.from_directory(str(local)),
                         checkpoint_dir_name=local.name,
                         delete_local_checkpoint_after_upload=True)

    def committed(self, step: int) -> None:
        """Rank 0's checkpoint gate: return once Ray Train has committed what was reported.
        report() returns once the files are uploaded; the controller registers the checkpoint
        (and writes its snapshot to storage) at its next poll, up to
        RAY_TRAIN_HEALTH_CHECK_INTERVAL_S later. A job stopped in between resumes from the
        previous checkpoint, so MLflow must not see these steps before the commit."""
        from ray.train import CheckpointConsistencyMode

        ray.train.get_all_reported_checkpoints(
            consistency_mode=CheckpointConsistencyMode.COMMITTED, timeout_s=COMMIT_TIMEOUT_S)

    def on_end(self, result: Any) -> None:
        if result.status == "failed":
            return  # other ranks may never get here: no collective report
        ray.train.report({"step": result.step, "status": result.status,
                          "run_id": result.run_id or "", **_numbers(result.metrics),
                          **_numbers(result.eval)})


class RankZeroReport(Hooks):
    """Rank 0, *after* the MLflow hook: keeps the run id for a restarted group, sets the
    dashboard gauges, and writes one progress line per event to the job's log."""

    def __init__(self, store: Any, run_dir: str, submission_id: str, gauges: bool = True):
        self.store = store
        self.run_dir = run_dir
        self.submission_id = submission_id
        self.want_gauges = gauges
        self.gauges: Gauges | None = None
        self.active = False
        self.total = 0

    def _say(self, text: str) -> None:
        # Not print(): Ray Train patches it into a logger that also tees to stdout once a
        # library (MLflow) has wrapped sys.stdout, so every line would reach the job log twice.
        if self.active and sys.__stdout__ is not None:
            sys.__stdout__.write(f"[phmscale] {text}\n")
            sys.__stdout__.flush()

    def on_start(self, info: RunInfo) -> str | None:
        self.active, self.total = info.rank == 0, info.spec.train.steps
        if not self.active:
            return None
        if info.run_id and self.store is not None:
            ray.get(self.store.set.remote(info.run_id))
        if self.want_gauges:
            self.gauges = Gauges(info.spec.name, self.submission_id)
            self.gauges.set(info.start_step, {})
        how = f"resuming from step {info.start_step}" if info.resumed else "starting from step 0"
        run = f"; MLflow run {info.run_id}" if info.run_id else ""
        self._say(f"{info.world_size} workers, {how} of {self.total}{run}")
        return None

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        if not self.active:
            return
        values = _numbers(metrics)
        if self.gauges is not None:
            self.gauges.set(step, values)
        self._say(f"step {step}/{self.total} loss {values.get('loss', float('nan')):.4f} "
                  f"{values.get('samples_per_s', 0.0):.1f} samples/s (t={time.time():.3f})")

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        self._say(f"eval at step {step}: " +
                  ", ".join(f"{k} {v:.4f}" for k, v in _numbers(metrics).items()))

    def on_checkpoint(self, step: int, path: str) -> None:
        self._say(f"checkpoint at step {step} saved to {self.run_dir}/{Path(path).name}")

    def on_end(self, result: Any) -> None:
        self._say(f"{result.status} at step {result.step}/{self.total} in {result.wall_s:.1f} s")


class _StopPoller(threading.Thread):
    """Sets `event` once the driver has asked the job to stop (`JobState.request_stop`).
    The loop checks the event at every step and all ranks agree on the step to stop at."""

    def __init__(self, store: Any, event: threading.Event, every_s: float = 0.5):
        super().__init__(daemon=True, name="phmscale-stop-poller")
        self.store, self.event, self.every_s = store, event, every_s
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every_s):
            try:
                if ray.get(self.store.stop_requested.remote(), timeout=5):
                    self.event.set()
                    return
            except ray.exceptions.GetTimeoutError:
                continue  # a busy head: ask again; a missed stop would cost the grace period
            except Exception:  # noqa: BLE001 - the driver (and its actor) is gone: Ray ends us
                return


def train_fn(config: dict[str, Any]) -> None:
    """The per-worker function `TorchTrainer` runs (the process group is already up)."""
    spec: JobSpec = config["spec"]
    if spec.resources.gpus_per_worker == 0:
        from phmscale.train.dist import pin_cpu_accelerator

        pin_cpu_accelerator()
    from phmscale.launch.mlflow_link import job_tag
    from phmscale.train.job import Launch, run_job

    rank = ray.train.get_context().get_world_rank()
    submission_id = config["submission_id"]
    scratch = scratch_dir(submission_id, rank)
    shutil.rmtree(scratch, ignore_errors=True)  # never mix in files of an earlier attempt
    local_ckpt = scratch / "checkpoints"
    local_ckpt.mkdir(parents=True)
    # Always: the driver refuses a fresh start (resume=false) over a run folder holding
    # checkpoints, so any checkpoint here is this submission's (a worker-group restart).
    restore(ray.train.get_checkpoint(), local_ckpt)

    tags = {"phmscale.spec_hash": config["spec_hash"], job_tag(submission_id): "1",
            "phmscale.ray_job_id": submission_id,
            "phmscale.checkpoint_storage": spec.mask(run_dir(spec))}
    store = config.get("run_store")
    stop = threading.Event()
    poller = None
    if store is not None:
        store.add_worker.remote(rank, ray.get_runtime_context().current_actor)
        poller = _StopPoller(store, stop)
        poller.start()
    launch = Launch(
        "ray", hooks=[RayReport(store)], tags=tags,
        late_hooks=[RankZeroReport(store, spec.mask(run_dir(spec)), submission_id,
                                   gauges=config.get("gauges", True))],
        # The engine saves to and resumes from worker-local scratch; Ray Train moves the
        # files to storage, whose run folder the driver has claimed.
        checkpoint_dir=str(local_ckpt), own_folder=False, stop=stop, resume=True)
    try:
        run_job(spec, launch)
    finally:
        if poller is not None:
            poller.done.set()
        shutil.rmtree(scratch, ignore_errors=True)
        try:
            scratch.parent.rmdir()  # the submission's folder, once no rank uses it
        except OSError:
            pass
