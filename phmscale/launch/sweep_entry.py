"""A sweep's driver on the cluster: Ray Tune runs each cell as a trial whose body is the
Ray Train `TorchTrainer` that `phmscale submit` builds for one job.

    python -m phmscale.launch.sweep_entry sweep.yaml --submission-id ID

`phmscale sweep` makes this the entrypoint of ONE Ray job, with every cell resolved in
sweep.yaml. Per cell, the trial does what `ray_entry` does for a job: checks its storage
(the run identity), holds its run folder and `JobState`, and fits the trainer, whose reports
reach Tune through Ray Train's `TuneReportCallback` (ASHA reads them). So a cell is exactly
the job `phmscale submit` would run: same folder (resumed on resubmission), same MLflow
run, now nested under the sweep's parent run.

Ray Tune schedules the trials (`max_concurrent`, ASHA); the trial actor itself asks for no
CPU, since its Ray Train workers ask for the job's `resources`: a trial holding a CPU would
leave 2 concurrent one-worker cells on 2 CPUs one CPU short.

`phmscale stop` sends SIGTERM: every running cell is asked to stop (its workers checkpoint
at the current step, as for a job), Tune's trials return, the parent run ends KILLED; a
resubmission resumes those cells and skips the finished ones.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

import yaml

from phmscale.spec import JobSpec, load_job_dict


def _say(text: str) -> None:
    print(f"[phmscale] {text}", flush=True)


def run_cell(config: dict[str, Any], cells: list[dict[str, Any]], submission_id: str,
             sweep_state: Any) -> None:
    """The trial: one cell, trained as `ray_entry` trains a job (see the module doc). A cell
    that Tune starts after the sweep was asked to stop returns at once, untrained."""
    import ray
    from ray.train import TrainingFailedError
    from ray.tune.integration.ray_train import TuneReportCallback

    from phmscale.launch.ray_entry import _claim, build_trainer, check_storage

    if ray.get(sweep_state.stop_requested.remote()):
        return
    cell = cells[config["cell"]]
    spec: JobSpec = cell["spec"]
    with contextlib.ExitStack() as stack:
        check_storage(spec)
        folder = None
        if "://" not in spec.checkpoint_dir:
            from phmscale.train.run_folder import RunFolder

            folder = stack.enter_context(RunFolder(spec, spec.checkpoint_dir))
        state = _claim(spec, folder.run_id if folder is not None else None)
        trainer = build_trainer(spec, f"{submission_id}-c{cell['index']}", spec.spec_hash(),
                                state, callbacks=[TuneReportCallback()])
        try:
            trainer.fit()
        except TrainingFailedError:
            _close_child(spec, ray.get(state.get.remote()), "FAILED")
            raise
        finally:
            run_id = ray.get(state.get.remote())
            if folder is not None and run_id:
                folder.record_run_id(run_id)


def _close_child(spec: JobSpec, run_id: str | None, status: str) -> None:
    if not run_id:
        return
    from mlflow.tracking import MlflowClient

    from phmscale.tracking.uri import use_credentials

    client = MlflowClient(use_credentials(spec.tracking.uri or ""))
    if client.get_run(run_id).info.status == "RUNNING":
        client.set_terminated(run_id, status=status)


class _Progress:
    """A Tune callback: one line per cell that ends (Tune's own tables are switched off)."""

    def __new__(cls, cells: list[dict[str, Any]]) -> Any:
        from ray.tune import Callback

        class Progress(Callback):
            def __init__(self) -> None:
                self.ended = 0
                self.started: dict[str, float] = {}
                self.walls: list[float] = []  # each ended cell's own wall time, s

            def on_trial_start(self, iteration: int, trials: list, trial: Any,
                               **info: Any) -> None:
                self.started[trial.trial_id] = time.monotonic()

            def _line(self, trial: Any, how: str) -> None:
                self.ended += 1
                if trial.trial_id in self.started:
                    self.walls.append(time.monotonic() - self.started[trial.trial_id])
                cell = cells[trial.config["cell"]]
                step = (trial.last_result or {}).get("step")
                _say(f"cell {cell['index']} ({cell['label']}) {how} at step {step} "
                     f"({self.ended} of {len(cells)} ended)")

            def on_trial_complete(self, iteration: int, trials: list, trial: Any,
                                  **info: Any) -> None:
                self._line(trial, "ended")

            def on_trial_error(self, iteration: int, trials: list, trial: Any,
                               **info: Any) -> None:
                self._line(trial, "FAILED")

        return Progress()


def _concurrency(cells: list[JobSpec], wanted: int | None) -> int:
    """`max_concurrent`, else as many cells as the cluster's CPUs (GPUs) hold at once."""
    import ray

    if wanted:
        return wanted
    total = ray.cluster_resources()
    r = cells[0].resources
    by_cpu = total.get("CPU", 1) // max(r.workers * r.cpus_per_worker, 1e-9)
    by_gpu = (total.get("GPU", 0) // (r.workers * r.gpus_per_worker)
              if r.gpus_per_worker else by_cpu)
    return max(1, int(min(by_cpu, by_gpu)))


def _stop_cells(specs: list[JobSpec], sweep_state: Any, grace_s: float,
                done: threading.Event, on_overrun: Any) -> None:
    """SIGTERM's work, in a thread: no new cell starts, every live cell is asked to stop
    (its JobState), then the sweep waits for them."""
    import ray

    from phmscale.launch.ray_entry import state_name

    _say(f"stop requested: running cells checkpoint at their current step (grace "
         f"{grace_s:.0f} s); submit the sweep again to resume them")
    ray.get(sweep_state.request_stop.remote())
    for spec in specs:
        with contextlib.suppress(Exception):  # a cell not started (or ended): no actor
            ray.get_actor(state_name(spec), namespace="phmscale").request_stop.remote()
    if not done.wait(max(1.0, grace_s - 5.0)):
        on_overrun()


def drive(record: dict[str, Any], submission_id: str) -> int:
    import ray
    from ray import tune

    from phmscale.launch.storage import mark_early_stopped, state
    from phmscale.tracking import sweep_runs
    from phmscale.tracking.uri import use_credentials

    info = record["sweep"]
    cells = [dict(c, spec=load_job_dict(c["job"], source=f"<sweep cell {c['label']}>"))
             for c in record["cells"]]
    first: JobSpec = cells[0]["spec"]
    uri = use_credentials(first.tracking.uri or "")
    parent = sweep_runs.open_parent(
        uri, first.tracking.experiment, info["id"], info["name"], info["axes"], len(cells),
        {"stop": info.get("stop"), "max_concurrent": info.get("max_concurrent")})
    states = {c["index"]: state(c["spec"]) for c in cells}
    todo = [c for c in cells if states[c["index"]] in ("new", "started")]
    skipped = len(cells) - len(todo)
    _say(f"sweep {info['id']}: {len(cells)} cells ({skipped} finished before, "
         f"{sum(s == 'started' for s in states.values())} to resume); MLflow parent run "
         f"{parent}")
    if not todo:
        sweep_runs.close_parent(uri, parent, "FINISHED", {"total": len(cells), "run": 0})
        _say("nothing to run: every cell has finished")
        return 0
    for c in todo:  # each cell's run nests under the parent, named after its cell
        spec: JobSpec = c["spec"]
        tracking = spec.tracking.model_copy(update={
            "run_name": f"{info['name']}/{c['label']}",
            "tags": {**spec.tracking.tags, **sweep_runs.child_tags(
                parent, info["id"], c["index"], c["label"], c["values"])}})
        c["spec"] = spec.model_copy(update={"tracking": tracking})

    ray.init(logging_level=logging.WARNING)
    # Metrics arrive only with checkpoints' reports; a report before the first evaluation
    # lacks the val metric ASHA reads: let Tune skip it rather than fail the trial.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    concurrent = _concurrency([c["spec"] for c in todo], info.get("max_concurrent"))
    scheduler, metric, mode = None, None, None
    if info.get("stop"):
        from ray.tune.schedulers import ASHAScheduler

        from phmscale.spec.sweep import STOP_METRICS

        metric = info["stop"].partition(":")[2]
        mode = STOP_METRICS[metric]
        # max_t one past the last step: at max_t ASHA stops the trial, and a stop at the last
        # report would kill the cell before its MLflow run is closed FINISHED
        steps = first.train.steps
        scheduler = ASHAScheduler(time_attr="step", max_t=steps + 1,
                                  grace_period=max(1, first.checkpoint.every), reduction_factor=2)
    from phmscale.launch.ray_worker import JobState

    sweep_state = JobState.remote()  # the sweep's own stop flag, which later cells read
    trainable = tune.with_resources(
        # `todo`'s dicts are `cells`' own (their specs now carry the nesting tags); a trial
        # finds its cell by index, which is its place in `cells`
        tune.with_parameters(run_cell, cells=cells, submission_id=submission_id,
                             sweep_state=sweep_state),
        # The trial actor needs no CPU (its Ray Train workers ask for the job's resources);
        # Tune refuses an empty request, so it asks for one byte of memory.
        {"CPU": 0, "memory": 1})
    progress = _Progress(cells)
    tuner = tune.Tuner(
        trainable,
        param_space={"cell": tune.grid_search([c["index"] for c in todo])},
        tune_config=tune.TuneConfig(max_concurrent_trials=concurrent, scheduler=scheduler,
                                    metric=metric, mode=mode, reuse_actors=False),
        run_config=tune.RunConfig(
            name=f"tune-{info['id']}-{submission_id[-4:]}", storage_path=info["storage"],
            callbacks=[progress], verbose=0),
    )
    done, stopping = threading.Event(), threading.Event()

    def overrun() -> None:
        _say("cells did not stop within the grace period: ending them")
        sweep_runs.close_stale_children(uri, parent)
        sweep_runs.close_parent(uri, parent, "KILLED", {"total": len(cells)})
        sys.stdout.flush()
        os._exit(143)

    def on_term(signum: int, frame: Any) -> None:
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=_stop_cells, daemon=True, args=(
                [c["spec"] for c in todo], sweep_state, first.resources.stop_grace_s, done,
                overrun)).start()

    signal.signal(signal.SIGTERM, on_term)
    started = time.monotonic()
    _say(f"running {len(todo)} cells, {concurrent} at a time"
         + (f", ASHA on {metric} ({mode})" if metric else ""))
    results = tuner.fit()
    done.set()
    counts: dict[str, float] = {"total": len(cells), "finished_before": skipped, "finished": 0, "failed": 0,
              "early_stopped": 0, "stopped": 0}
    for result in results:
        cell = cells[result.config["cell"]]
        step = (result.metrics or {}).get("step")
        if result.error is not None:
            counts["failed"] += 1
        elif step is not None and step >= cell["spec"].train.steps:
            counts["finished"] += 1
        elif stopping.is_set():
            counts["stopped"] += 1
        else:  # Tune ended it short of its steps, and not for a stop: ASHA's decision
            counts["early_stopped"] += 1
            mark_early_stopped(cell["spec"], step, metric or "")
    sweep_runs.close_stale_children(uri, parent)
    wall = time.monotonic() - started
    if progress.walls:  # Tune's own cost: the sweep against its cells run back to back
        counts["wall_s"] = round(wall, 1)
        counts["cell_wall_s_sum"] = round(sum(progress.walls), 1)
        counts["overhead_ratio"] = round(wall / (sum(progress.walls) / concurrent), 3)
    status = "FAILED" if counts["failed"] else "KILLED" if stopping.is_set() else "FINISHED"
    sweep_runs.close_parent(uri, parent, status, counts)
    _say(f"sweep {info['id']} {status.lower()} in {wall:.0f} s: "
         + ", ".join(f"{k} {v}" for k, v in counts.items()) + f"; MLflow parent run {parent}")
    return 1 if counts["failed"] else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m phmscale.launch.sweep_entry")
    parser.add_argument("sweep", help="the resolved sweep (sweep.yaml)")
    parser.add_argument("--submission-id", default="")
    args = parser.parse_args(argv)
    from phmscale.errors import PhmscaleError

    with open(args.sweep) as handle:
        record = yaml.safe_load(handle)
    try:
        return drive(record, args.submission_id)
    except PhmscaleError as error:
        from phmscale.spec.secrets import mask_values

        _say(f"error: {mask_values(str(error))}")
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
