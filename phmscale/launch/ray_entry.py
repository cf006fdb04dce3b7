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

`phmscale stop` sends SIGTERM here (SIGKILL 3 s later): `DriverWatch` kills the workers, marks
the MLflow run KILLED and exits; the committed checkpoints stay in storage.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import Any

from phmscale.spec import JobSpec, load_job


def build_trainer(spec: JobSpec, submission_id: str, spec_hash: str, state: Any) -> Any:
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
        ),
    )


class DriverWatch(threading.Thread):
    """The driver's second thread: learns the MLflow run id from the workers (through
    `JobState`) and prints it once; on SIGTERM (`phmscale stop`) it ends the job.

    Stopping, in order, inside the 3 s Ray gives a driver before SIGKILL: kill the worker
    actors (so none lives to see the driver gone and close the MLflow run as FAILED), mark
    the run KILLED, exit. Checkpoints that Ray Train committed stay in storage; submitting the
    same job again resumes from the newest one, in the same MLflow run.
    """

    def __init__(self, state: Any, uri: str, run_dir: str):
        super().__init__(daemon=True, name="phmscale-driver-watch")
        self.state, self.uri, self.run_dir = state, uri, run_dir
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
            print(f"[phmscale] MLflow run {run_id} at {_public(self.uri)}", flush=True)
            try:  # connect now (SQLAlchemy engine, schema check: seconds), not when stopping
                from mlflow.tracking import MlflowClient

                self.client = MlflowClient(self.uri)
                self.client.get_run(run_id)
            except Exception:  # noqa: BLE001 - close_run reports it if it matters
                self.client = None

    def _stop(self) -> None:
        import ray

        print("[phmscale] stop requested: the committed checkpoints and the MLflow run stay; "
              f"submit the same job again to resume from {self.run_dir}", flush=True)
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
    from phmscale.launch.package import public_uri

    return public_uri(uri)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m phmscale.launch.ray_entry")
    parser.add_argument("job", help="the resolved job YAML")
    parser.add_argument("--submission-id", default="")
    parser.add_argument("--spec-hash", default="")
    args = parser.parse_args(argv)

    spec = load_job(args.job)
    import ray

    from phmscale.launch.ray_worker import JobState, run_dir

    ray.init(logging_level=logging.WARNING)
    state = JobState.remote()
    watch = DriverWatch(state, spec.tracking.uri or "", run_dir(spec))
    watch.start()
    # Only set a flag here: the stop itself makes Ray calls, which belong in a thread, not in
    # a signal handler interrupting one.
    signal.signal(signal.SIGTERM, lambda signum, frame: watch.stop_requested.set())
    r = spec.resources
    print(f"[phmscale] job {spec.name} (spec {args.spec_hash or spec.spec_hash()}), submission "
          f"{args.submission_id}: {r.workers} workers, {spec.train.steps} steps, checkpoints "
          f"in {run_dir(spec)}", flush=True)
    trainer = build_trainer(spec, args.submission_id, args.spec_hash or spec.spec_hash(), state)
    from ray.train import TrainingFailedError

    try:
        result = trainer.fit()
    except TrainingFailedError as error:
        watch.done.set()
        watch.run_id = watch.run_id or ray.get(state.get.remote())
        watch.close_run("FAILED")  # a rank 0 that died cannot have closed it
        print(f"[phmscale] training failed: {error}", flush=True)
        return 1
    watch.done.set()
    # Result.metrics are those of the latest checkpoint's report; fit() returning at all
    # means every worker finished its loop.
    metrics = result.metrics or {}
    print(f"[phmscale] completed at step {metrics.get('step')}/{spec.train.steps}; "
          f"MLflow run {watch.run_id or ray.get(state.get.remote())}; latest checkpoint "
          f"{result.checkpoint.path if result.checkpoint else 'none'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
