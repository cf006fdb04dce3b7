"""The job's driver on the cluster: a Ray Train `TorchTrainer` running the engine's loop.

    python -m phmscale.launch.ray_entry job.yaml --submission-id ID --spec-hash HASH

`phmscale submit` makes this the entrypoint, with the resolved job in the working_dir. The spec
maps onto Ray Train one to one:

| spec                          | Ray Train                                                    |
|-------------------------------|--------------------------------------------------------------|
| resources.workers             | ScalingConfig(num_workers)                                   |
| resources.cpus/gpus_per_worker| ScalingConfig(resources_per_worker, use_gpu); gloo or nccl   |
| resources.max_failures        | RunConfig(failure_config=FailureConfig(max_failures))        |
| checkpoint.dir, name          | RunConfig(storage_path=checkpoint.dir, name=name): the same  |
|                               | job submitted again resumes from its latest checkpoint       |
| checkpoint.keep               | CheckpointConfig(num_to_keep)                                |

The driver owns the job's run folder in storage (`RunFolder`: identity checked, locked, MLflow
run id kept) for as long as it runs, and a named `JobState` actor per storage folder, so a
second live job on the same folder is refused even where a file lock cannot reach.

`phmscale stop` sends SIGTERM here, and Ray SIGKILLs the driver (and with it the workers)
`resources.stop_grace_s` later (RAY_JOB_STOP_WAIT_TIME_S, which `submit` sets). Within that
grace the workers save a checkpoint at their current step, end the MLflow run KILLED and
return; `fit()` returns and the driver exits. A submit of the same job resumes at that step.
If the workers overrun the grace (a step longer than it), `DriverWatch` falls back: kills
them, marks the run KILLED, exits; the last committed checkpoint stays.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from typing import Any

from phmscale.launch.ray_worker import run_dir
from phmscale.spec import JobSpec, load_job


def build_trainer(spec: JobSpec, submission_id: str, spec_hash: str, state: Any,
                  callbacks: list[Any] | None = None) -> Any:
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from phmscale.launch.ray_worker import train_fn

    r = spec.resources
    use_gpu = r.gpus_per_worker > 0
    per_worker: dict[str, float] = {"CPU": r.cpus_per_worker}
    if use_gpu:
        per_worker["GPU"] = r.gpus_per_worker
    return TorchTrainer(
        train_fn,
        train_loop_config={"spec": spec, "submission_id": submission_id,
                           "spec_hash": spec_hash, "run_store": state},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=r.workers, use_gpu=use_gpu,
                                     resources_per_worker=per_worker),
        run_config=RunConfig(
            name=spec.name,
            storage_path=spec.checkpoint_dir,
            failure_config=FailureConfig(max_failures=r.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=spec.checkpoint.keep),
            callbacks=callbacks,  # a sweep's cell: Ray Tune's TuneReportCallback
        ),
    )


class DriverWatch(threading.Thread):
    """The driver's second thread: learns the MLflow run id from the workers (through
    `JobState`), prints it once and keeps it in the run folder; on SIGTERM it asks the
    workers to stop (see the module docstring) and, if they overrun the grace, ends them."""

    MARGIN_S = 5.0  # of the grace, kept for the fallback itself (kill, close the run, exit)

    def __init__(self, state: Any, uri: str, run_dir: str, grace_s: float,
                 folder: Any = None):
        super().__init__(daemon=True, name="phmscale-driver-watch")
        self.state, self.uri, self.run_dir, self.folder = state, uri, run_dir, folder
        self.grace_s = grace_s
        self.run_id: str | None = None
        self.client: Any = None  # an MlflowClient, connected once the run id is known
        self.stop_requested = threading.Event()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            if self.stop_requested.wait(1.0):
                self._stop()
                return
            self._learn_run_id()

    def _learn_run_id(self, timeout: float = 10.0) -> None:
        import ray

        try:
            run_id = ray.get(self.state.get.remote(), timeout=timeout)
        except Exception:  # noqa: BLE001 - the driver is going away
            return
        if run_id and run_id != self.run_id:
            self.run_id = run_id
            if self.folder is not None:
                self.folder.record_run_id(run_id)
            print(f"[phmscale] MLflow run {run_id} at {_public(self.uri)}", flush=True)
            try:  # connect now (SQLAlchemy engine, schema check: seconds), not when stopping
                from mlflow.tracking import MlflowClient

                self.client = MlflowClient(self.uri)
                self.client.get_run(run_id)
            except Exception:  # noqa: BLE001 - close_run reports it if it matters
                self.client = None

    def _stop(self) -> None:
        import ray

        print(f"[phmscale] stop requested: the workers checkpoint at their current step "
              f"(grace {self.grace_s:.0f} s); submit the same job again to resume from "
              f"{self.run_dir}", flush=True)
        try:
            ray.get(self.state.request_stop.remote(), timeout=5.0)
        except Exception:  # noqa: BLE001 - fall through to the forced stop
            pass
        if self.done.wait(max(1.0, self.grace_s - self.MARGIN_S)):
            return  # fit() returned: the main thread reports and exits
        print("[phmscale] the workers did not stop within the grace period: ending them; "
              "the last committed checkpoint stays", flush=True)
        try:
            for actor in ray.get(self.state.worker_actors.remote(), timeout=1.0):
                ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 - they die with the driver anyway
            pass
        if self.run_id is None:
            self._learn_run_id(timeout=1.0)
        self.close_run("KILLED")
        sys.stdout.flush()
        os._exit(143)

    def close_run(self, status: str) -> None:
        if not self.run_id:
            return
        try:
            from mlflow.tracking import MlflowClient

            client = self.client or MlflowClient(self.uri)
            if client.get_run(self.run_id).info.status == "RUNNING":  # never undo FINISHED
                client.set_terminated(self.run_id, status=status)
        except Exception as error:  # noqa: BLE001
            print(f"[phmscale] could not mark MLflow run {self.run_id} {status}: {error}",
                  flush=True)


def _public(uri: str) -> str:
    from phmscale.spec.secrets import mask_values  # the job's secrets, then any userinfo

    return mask_values(uri)


def state_name(spec: JobSpec) -> str:
    """The name of a job's `JobState` actor (namespace `phmscale`): hashed from its storage
    folder, because actor names show on the dashboard and a folder name may hold a secret."""
    import hashlib

    return "phmscale-run:" + hashlib.sha256(spec.checkpoint_dir.encode()).hexdigest()[:24]


CLAIM_WAIT_S = 20.0  # an earlier driver's JobState outlives it by a moment


def _claim(spec: JobSpec, initial_run_id: str | None) -> Any:
    """The job's `JobState`, named after its storage folder: creating it fails while another
    live job on this cluster holds the name. The name of a job that just ended (a stop, then
    the same job submitted again) is freed once Ray has noticed its driver is gone, within
    seconds: wait that long before calling the folder in use."""
    import time

    from phmscale.errors import InvalidInputError
    from phmscale.launch.ray_worker import JobState

    name = state_name(spec)
    deadline = time.monotonic() + CLAIM_WAIT_S
    while True:
        try:
            return JobState.options(name=name, namespace="phmscale").remote(initial_run_id)
        except ValueError:
            if time.monotonic() > deadline:
                raise InvalidInputError(
                    f"checkpoint folder {spec.mask(spec.checkpoint_dir)} is in use by another "
                    "live job on this cluster (`phmscale list` shows it): wait for it to end "
                    "or stop it, or give this job another name or checkpoint.dir.") from None
            time.sleep(0.5)


def check_storage(spec: JobSpec) -> None:
    """Refuse, before any worker starts, what the run's storage says cannot go on: a
    checkpoint of another run (object storage has no run.json: the markers say whose), or a
    fresh start (`checkpoint.resume=false`) over a run Ray Train would continue."""
    from phmscale.errors import InvalidInputError
    from phmscale.launch.storage import latest_marker
    from phmscale.train.run_folder import mismatch_message

    marker = latest_marker(spec.checkpoint_dir, spec.name)
    if marker is None:
        return
    if not spec.checkpoint.resume:
        raise InvalidInputError(
            f"checkpoint.resume=false, but {spec.mask(run_dir(spec))} holds a run's "
            "checkpoints, which Ray Train would continue and rotate: remove that folder or "
            "name another checkpoint.dir")
    if marker.get("fingerprint") not in (None, spec.fingerprint()):
        raise InvalidInputError(mismatch_message(spec, run_dir(spec), marker))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m phmscale.launch.ray_entry")
    parser.add_argument("job", help="the resolved job YAML")
    parser.add_argument("--submission-id", default="")
    parser.add_argument("--spec-hash", default="")
    args = parser.parse_args(argv)
    from phmscale.errors import PhmscaleError

    try:
        with contextlib.ExitStack() as stack:
            spec = load_job(args.job)
            check_storage(spec)
            folder = None
            if "://" not in spec.checkpoint_dir:  # object storage: the named actor alone
                from phmscale.train.run_folder import RunFolder

                folder = stack.enter_context(RunFolder(spec, spec.checkpoint_dir))
            return _drive(spec, args, folder)
    except PhmscaleError as error:  # a refused folder, a secret the cluster lacks
        from phmscale.spec.secrets import mask_values

        print(f"[phmscale] error: {mask_values(str(error))}", flush=True)
        return error.exit_code


def _drive(spec: JobSpec, args: argparse.Namespace, folder: Any) -> int:
    import ray

    ray.init(logging_level=logging.WARNING)
    state = _claim(spec, folder.run_id if folder is not None else None)
    r = spec.resources
    watch = DriverWatch(state, spec.tracking.uri or "", spec.mask(run_dir(spec)),
                        r.stop_grace_s, folder)
    watch.start()
    # Only set a flag here: the stop itself makes Ray calls, which belong in a thread, not in
    # a signal handler interrupting one.
    signal.signal(signal.SIGTERM, lambda signum, frame: watch.stop_requested.set())
    print(f"[phmscale] job {spec.name} (spec {args.spec_hash or spec.spec_hash()}, "
          f"fingerprint {spec.fingerprint()}), submission {args.submission_id}: {r.workers} "
          f"workers, {spec.train.steps} steps, checkpoints in {spec.mask(run_dir(spec))}",
          flush=True)
    trainer = build_trainer(spec, args.submission_id, args.spec_hash or spec.spec_hash(), state)
    from ray.train import TrainingFailedError

    try:
        result = trainer.fit()
    except TrainingFailedError as error:
        watch.done.set()
        watch.run_id = watch.run_id or ray.get(state.get.remote())
        watch.close_run("FAILED")  # a rank 0 that died cannot have closed it
        from phmscale.spec.secrets import mask_values

        print(f"[phmscale] training failed: {mask_values(spec.mask(str(error)))}", flush=True)
        return 1
    watch.done.set()
    # Result.metrics are those of the last report; fit() returning at all means every
    # worker finished its loop (to the end, or to the step a stop asked for).
    metrics = result.metrics or {}
    run_id = watch.run_id or ray.get(state.get.remote())
    if folder is not None:
        folder.record_run_id(run_id)
    how = "stopped" if watch.stop_requested.is_set() else "completed"
    print(f"[phmscale] {how} at step {metrics.get('step')}/{spec.train.steps}; "
          f"MLflow run {run_id}; latest checkpoint "
          f"{spec.mask(result.checkpoint.path) if result.checkpoint else 'none'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
