"""MLflow logging through the engine's hooks, from rank 0 only.

One MLflow run per job across restarts: the run id travels in the checkpoint's client state,
and a resumed job reopens that run. Step metrics are buffered and written when a checkpoint
completes (and at the end): a crash loses only the steps after the last checkpoint, which the
resumed run recomputes, so every step is logged exactly once.

The flush after a checkpoint runs in a thread, so the loop is not blocked by the store (a
sqlite store took ~0.1 s a flush, and the first one also waits for the run's figures, up to
~1.6 s: docs/benchmarks.md, "Checkpoint stall and step split", "Small costs"). Every later
flush, and the end of the run, waits for it first. Only a process killed outright during that flush loses its steps — as a
kill between the checkpoint's rename and a flush in the loop always did.

A flush is one `log_batch` request per 1000 metrics (MLflow's limit per batch), not one per
step, because each request costs a server round trip and a SQL transaction, whatever its size:
batching cuts a run's logging time by an order of magnitude (docs/benchmarks.md, "MLflow
logging").
"""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from phmscale import __version__
from phmscale.tracking.experiment import ensure_experiment
from phmscale.tracking.params import flatten, redact, spec_params
from phmscale.tracking.uri import check_reachable, resolve_uri, use_credentials
from phmscale.train.hooks import Hooks, RunInfo

_END_STATUS = {"completed": "FINISHED", "interrupted": "KILLED", "failed": "FAILED",
               "dry_run": "FINISHED"}
MAX_METRICS_PER_BATCH = 1000  # mlflow.utils.validation.MAX_METRICS_PER_BATCH (MLflow 3.17)
MAX_PARAMS_PER_BATCH = 100  # mlflow.utils.validation.MAX_PARAMS_TAGS_PER_BATCH
log = logging.getLogger("phmscale.tracking")


def _git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


class MLflowHook(Hooks):
    def __init__(self, uri: str, launcher: str, extra_tags: dict[str, str] | None = None,
                 system_metrics: bool = True):
        self.uri = use_credentials(uri)  # never a password in a URI MLflow logs or shows
        self.launcher = launcher
        self.extra_tags = extra_tags or {}
        self.system_metrics = system_metrics
        self.run_id: str | None = None
        self.active = False
        # (key, value, timestamp ms, step), oldest first: what the next flush sends.
        self.buffer: list[tuple[str, float, int, int]] = []
        self.history: dict[str, list[tuple[int, float]]] = {}
        self.info: RunInfo | None = None
        self._figures: threading.Thread | None = None  # logs the run-level figures
        # Sends a checkpoint's steps: one thread, started with the run (starting one per
        # flush would wait for the OS to schedule it, in the loop: async_save.SnapshotEngine).
        self._flush_pool: ThreadPoolExecutor | None = None
        self._flusher: Future[None] | None = None
        self._lock = threading.Lock()  # the buffer: appended here, drained by the flusher
        self.gates: list[Any] = []  # RunInfo.checkpoint_gates

    # -- lifecycle -------------------------------------------------------------------------
    def on_start(self, info: RunInfo) -> str | None:
        if info.rank != 0:
            return None
        import mlflow

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # DB-migration/monitor chatter
        self.info = info
        self.gates = info.checkpoint_gates  # Ray Train's commit, when under Ray
        spec = info.spec
        shown = spec.public_dump()
        mlflow.set_tracking_uri(self.uri)
        experiment_id = ensure_experiment(self.uri, spec.tracking.experiment)
        mlflow.set_experiment(experiment_id=experiment_id)
        if info.run_id:
            run = mlflow.start_run(run_id=info.run_id, log_system_metrics=self.system_metrics)
        else:
            run = mlflow.start_run(experiment_id=experiment_id,
                                   run_name=shown["tracking"]["run_name"] or spec.name,
                                   log_system_metrics=self.system_metrics)
        self.run_id, self.active = run.info.run_id, True
        self._pool().submit(lambda: None)  # start its thread now, outside the loop
        self._load_history()
        tags = {
            "phmscale.job": spec.name, "phmscale.model.kind": spec.model.kind,
            "phmscale.algebra": spec.model.algebra, "phmscale.n": str(spec.model.algebra_dim),
            "phmscale.task": spec.model.task, "phmscale.launcher": self.launcher,
            "phmscale.version": __version__, "phmscale.spec_hash": spec.spec_hash(),
            "phmscale.fingerprint": spec.fingerprint(),
            "phmscale.world_size": str(info.world_size), **shown["tracking"]["tags"],
            **self.extra_tags,
        }
        if sha := _git_sha():
            tags["phmscale.git_sha"] = sha
        mlflow.set_tags(tags)
        if not info.resumed:
            # In a thread, so training starts now: the model summary builds the net and its
            # dense twin and counts FLOPs (up to seconds; docs/benchmarks.md), then params,
            # figures and artifacts go to the store. Joined before any flush.
            self._figures = threading.Thread(target=self._log_run_figures, args=(info,),
                                             name="phmscale-mlflow-figures", daemon=True)
            self._figures.start()
        return self.run_id

    def _join_figures(self) -> None:
        if self._figures is not None:
            self._figures.join()
            self._figures = None

    def _log_run_figures(self, info: RunInfo) -> None:
        """Spec params, parameter/FLOP figures and the artifacts, through the client with the
        run id: MLflow's fluent API keeps the active run per thread, and this is another one.
        A failure is logged, never raised: it must not stop the training it runs beside."""
        try:
            self._log_run_figures_now(info)
        except Exception as error:  # noqa: BLE001
            log.warning("MLflow run %s: could not log the run's figures: %s", self.run_id,
                        error)

    def _log_run_figures_now(self, info: RunInfo) -> None:
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient

        from phmscale.models import summarize

        spec, client, run_id = info.spec, MlflowClient(self.uri), str(self.run_id)
        params = [Param(k, v) for k, v in spec_params(spec).items()]
        for start in range(0, len(params), MAX_PARAMS_PER_BATCH):
            client.log_batch(run_id, params=params[start:start + MAX_PARAMS_PER_BATCH])
        summary = summarize(spec)
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in {
            "params": summary.params_total,
            "params_trainable": summary.params_trainable,
            "twin_params": summary.twin_params,
            "savings_ratio": summary.savings_ratio,
            "flops_per_sample": summary.forward_flops_analytic,
            "train_flops_per_sample": summary.train_flops_per_sample,
            "compute_density": summary.flops_per_param,
        }.items()])
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            job = redact(flatten(spec.public_dump()))
            (root / "job.yaml").write_text(yaml.safe_dump(_unflatten(job), sort_keys=False))
            (root / "deepspeed_config.json").write_text(  # train.deepspeed may hold a key
                json.dumps(info.deepspeed_config, indent=2))
            (root / "model_summary.json").write_text(
                json.dumps(summary.to_dict(), indent=2, default=str))
            (root / "model_summary.txt").write_text(_summary_text(summary, info.model))
            client.log_artifacts(run_id, tmp)

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self._buffer(step, metrics)

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        self._buffer(step, metrics)

    def _buffer(self, step: int, metrics: dict[str, float]) -> None:
        if self.active:  # stamped now: the UI's wall-time axis shows the step, not the flush
            now = int(time.time() * 1000)
            with self._lock:
                self.buffer += [(key, float(value), now, step) for key, value in metrics.items()]

    def on_checkpoint(self, step: int, path: str) -> None:
        if not self.active:
            return
        shown = self.info.spec.mask(path) if self.info is not None else path
        self._join_flush()
        # Only the steps the checkpoint holds: a save written in the background completes a
        # few steps after the step it saved, and the steps since are not yet safe (a run
        # resumed from this checkpoint logs them again).
        self._flusher = self._pool().submit(self._flush_behind, step, shown)

    def _flush_behind(self, step: int, shown: str) -> None:
        """The thread's flush, through the client with the run id (the fluent API's active
        run is the loop thread's). A failure is logged: its steps stay buffered for the next
        flush, which raises if the store is still down."""
        from mlflow.tracking import MlflowClient

        try:
            for gate in self.gates:
                gate(step)
            self._send(through=step)
            MlflowClient(self.uri).set_tag(str(self.run_id), "phmscale.last_checkpoint", shown)
        except Exception as error:  # noqa: BLE001
            log.warning("MLflow run %s: could not log steps up to %d: %s", self.run_id, step,
                        error)

    def _pool(self) -> ThreadPoolExecutor:
        if self._flush_pool is None:
            self._flush_pool = ThreadPoolExecutor(max_workers=1,
                                                  thread_name_prefix="phmscale-mlflow-flush")
        return self._flush_pool

    def _join_flush(self) -> None:
        if self._flusher is not None:
            self._flusher.result()  # _flush_behind never raises
            self._flusher = None

    def flush(self, through: int | None = None) -> None:
        """Send the buffer (its steps up to `through`, all by default), after any flush in
        flight."""
        self._join_flush()
        self._send(through)

    def _send(self, through: int | None = None) -> None:
        """Send in batches. Each batch leaves the buffer only once MLflow took it: if one
        fails, a later flush sends the rest, and nothing already logged goes twice."""
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        self._join_figures()
        if not self.buffer or self.run_id is None:
            return
        client = MlflowClient(self.uri)
        with self._lock:  # oldest first, so the steps to send are a prefix of the buffer
            ready = len(self.buffer) if through is None else next(
                (i for i, m in enumerate(self.buffer) if m[3] > through), len(self.buffer))
        while ready:
            with self._lock:
                chunk = self.buffer[:min(ready, MAX_METRICS_PER_BATCH)]
            # synchronous even under MLFLOW_ENABLE_ASYNC_LOGGING: these steps count as logged
            # once the checkpoint exists, so they must be in the store before it is used.
            client.log_batch(self.run_id, metrics=[Metric(*m) for m in chunk],
                             synchronous=True)
            with self._lock:
                del self.buffer[:len(chunk)]
            ready -= len(chunk)
            for key, value, _, step in chunk:
                self.history.setdefault(key, []).append((step, value))

    def on_end(self, result: Any) -> None:
        if not self.active:
            return
        import mlflow

        self._join_flush()  # a checkpoint's steps are in the store before the run ends
        self._join_figures()  # a run never ends with its figures half written

        # Steps after the last checkpoint are recomputed by a resumed run: drop them unless
        # the run is over (completed), so no step is ever logged twice.
        if result.status in ("completed", "dry_run"):
            self.flush()
            finals = {"final_" + k: v for k, v in result.eval.items()}
            if result.best_quality is not None:
                finals["best_quality"] = result.best_quality
            if finals:
                mlflow.log_metrics(finals, step=result.step)
            self._log_plot()
            if self.info is not None and self.info.spec.tracking.log_model and self.info.model:
                import mlflow.pytorch

                mlflow.pytorch.log_model(self.info.model, name="model")
        elif result.status == "interrupted":
            self.flush()  # the loop checkpointed at this step before stopping
        mlflow.end_run(status=_END_STATUS.get(result.status, "FAILED"))
        self.active = False
        if self._flush_pool is not None:
            self._flush_pool.shutdown()
            self._flush_pool = None

    # -- helpers -------------------------------------------------------------------------
    def _load_history(self) -> None:
        """On resume, the curves so far (for the end-of-run plot)."""
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.uri)
        run = client.get_run(self.run_id)
        for key in run.data.metrics:
            points = client.get_metric_history(self.run_id, key)
            self.history[key] = sorted((p.step, p.value) for p in points)

    def _log_plot(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import mlflow

        quality = "val_bpb" if "val_bpb" in self.history else "val_accuracy"
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, key in zip(axes, ("loss", quality), strict=True):
            points = self.history.get(key, [])
            if points:
                ax.plot(*zip(*points, strict=True), marker=".")
            ax.set_xlabel("step")
            ax.set_ylabel(key)
            ax.grid(alpha=0.3)
        fig.suptitle(self.info.spec.name if self.info else "")
        fig.tight_layout()
        mlflow.log_figure(fig, "curves.png")
        plt.close(fig)


def _unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def _summary_text(summary: Any, model: Any) -> str:
    lines = [f"{k}: {v}" for k, v in summary.to_dict().items() if k != "params_by_kind"]
    lines += ["", "params by layer kind:"]
    lines += [f"  {k}: {v:,}" for k, v in summary.params_by_kind.items()]
    if model is not None:
        lines += ["", repr(model)]
    return "\n".join(lines) + "\n"


def tracking_hooks(spec: Any, launcher: str, extra_tags: dict[str, str] | None = None
                   ) -> list[Hooks]:
    """The hooks `run`/launchers attach; checks the server answers before training starts."""
    uri = use_credentials(resolve_uri(spec))
    check_reachable(uri)
    return [MLflowHook(uri, launcher, extra_tags)]
