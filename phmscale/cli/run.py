"""`phmscale run`: train a job in this process (world size 1), on one GPU if present else CPU."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from phmscale.cli.job import SET_HELP
from phmscale.spec import JobSpec, load_job
from phmscale.train.hooks import Hooks

console = Console()

DRY_RUN_STEPS = 8  # 2 warm-up steps (allocator, thread pools) + 6 timed


class ProgressHook(Hooks):
    """A rich progress bar fed by the loop's metrics."""

    def __init__(self, progress: Progress, total: int):
        self.progress, self.total = progress, total
        self.task = progress.add_task("train", total=total, loss=float("nan"), rate=0.0, q="")

    def on_start(self, info):  # noqa: ANN001
        self.progress.update(self.task, completed=info.start_step)
        return None

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.progress.update(self.task, completed=step, loss=metrics["loss"],
                             rate=metrics["samples_per_s"])

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        q = metrics.get("val_accuracy", metrics.get("val_bpb"))
        name = "acc" if "val_accuracy" in metrics else "bpb"
        self.progress.update(self.task, q=f"{name} {q:.4f}")


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024:
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def summary_table(spec: JobSpec, r) -> Table:  # noqa: ANN001 (TrainResult)
    table = Table(title=f"{spec.name}: {r.status} at step {r.step}/{spec.train.steps}",
                  show_header=False, title_justify="left")
    table.add_column("metric", style="bold cyan")
    table.add_column("value")
    m = r.metrics
    if m:
        table.add_row("train loss (last window)", f"{m['loss']:.4f}")
        table.add_row("samples/s", f"{m['samples_per_s']:.1f}")
        if spec.model.task == "causal_lm":
            table.add_row("tokens/s", f"{m['tokens_per_s']:.0f}")
        table.add_row("data wait", f"{100 * m['data_wait_frac']:.1f}% of step time")
        table.add_row("achieved FLOP/s", f"{m['flops_per_s'] / 1e9:.2f} GFLOP/s "
                      f"({r.train_flops_per_sample / 1e6:.2f} MFLOP/sample, 3× forward)")
        mfu = f"{100 * m['mfu']:.1f}%" if "mfu" in m else "unknown"
        table.add_row("MFU", f"{mfu} (peak: {r.peak.source if r.peak else 'unknown'})")
    for key, value in r.eval.items():
        table.add_row(key, f"{value:.4f}")
    if r.best_quality is not None:
        table.add_row("best quality", f"{r.best_quality:.4f}")
    table.add_row("wall time", f"{r.wall_s:.1f} s ({r.step - r.start_step} steps this run)")
    table.add_row("peak memory", _fmt_bytes(r.peak_memory_bytes))
    if r.checkpoint:
        table.add_row("checkpoint", spec.mask(r.checkpoint))
    if r.run_id:
        table.add_row("MLflow run", r.run_id)
    return table


def dry_run_table(spec: JobSpec, r, workers: int) -> Table:  # noqa: ANN001
    """What a user checks before spending cluster time."""
    from phmscale.models import summarize

    s = summarize(spec)
    timed = r.step_times[2:] or r.step_times
    step_s = statistics.median(timed)
    remaining = spec.train.steps
    table = Table(title=f"{spec.name}: dry run, {len(r.step_times)} steps, nothing written",
                  show_header=False, title_justify="left")
    table.add_column("metric", style="bold cyan")
    table.add_column("value")
    samples = spec.data.batch_size * spec.train.grad_accum
    table.add_row("step time (median)", f"{1000 * step_s:.1f} ms")
    table.add_row("samples/s (this process)", f"{samples / step_s:.1f}")
    table.add_row("params / dense twin", f"{s.params_total:,} / {s.twin_params:,} "
                  f"({s.savings_ratio:.2f}× fewer)")
    table.add_row("forward FLOPs/sample", f"{s.forward_flops_analytic / 1e6:.2f} M")
    mfu = r.metrics.get("mfu")
    table.add_row("MFU", (f"{100 * mfu:.1f}%" if mfu is not None else "unknown")
                  + f" (peak: {r.peak.source if r.peak else 'unknown'})")
    table.add_row("peak memory (this process)", f"{_fmt_bytes(r.peak_memory_bytes)} of tensors")
    table.add_row(
        f"estimated job wall time ({workers} workers)",
        f"{remaining * step_s / 60:.1f} min for {remaining} steps "
        "(per-worker batch is fixed, so step time is this one plus gradient all-reduce)",
    )
    here, there, comm = _estimates(spec, workers)
    table.add_row("estimated peak memory (this process)",
                  f"{_fmt_bytes(here.peak_bytes)} (at {here.peak_at}; "
                  f"{here.peak_bytes / max(r.peak_memory_bytes, 1):.2f}× the measured)")
    table.add_row("  activations", f"{_fmt_bytes(here.activations_plain)} plain, "
                  f"{_fmt_bytes(here.activations_checkpointed)} checkpointed (training: "
                  f"{'on' if here.activation_checkpointing else 'off'})")
    table.add_row(
        f"memory per worker (ZeRO-{spec.train.zero_stage}, {workers} workers)",
        f"{_fmt_bytes(there.peak_bytes)} peak: params {_fmt_bytes(there.parameters)}, grads "
        f"{_fmt_bytes(there.gradients)}, optimizer {_fmt_bytes(there.optimizer_state)} + "
        f"fp32 master {_fmt_bytes(there.master_weights)}, activations "
        f"{_fmt_bytes(there.activations)}",
    )
    table.add_row(f"communication per step ({workers} workers)",
                  f"{_fmt_bytes(comm.total_bytes)} sent per rank (gradients "
                  f"{_fmt_bytes(comm.gradient_bytes)}, parameter gathers "
                  f"{_fmt_bytes(comm.parameter_bytes)})")
    return table


def _estimates(spec: JobSpec, workers: int):  # noqa: ANN202
    """Memory here (one process, as measured), memory and traffic per worker of the job."""
    from phmscale.train.estimate import estimate_comm, estimate_memory

    return (estimate_memory(spec, 1), estimate_memory(spec, workers),
            estimate_comm(spec, workers))


def dry_run_json(spec: JobSpec, r, workers: int) -> dict:  # noqa: ANN001 (TrainResult)
    """The dry run's figures for scripts: the measured peak beside its estimate."""
    import torch

    timed = r.step_times[2:] or r.step_times
    here, there, comm = _estimates(spec, workers)
    return {
        "job": spec.name,
        "steps": len(r.step_times),
        "step_time_s": statistics.median(timed),
        "mfu": r.metrics.get("mfu"),
        "peak_memory_bytes": r.peak_memory_bytes,
        "peak_memory_source": ("torch.cuda.max_memory_allocated" if torch.cuda.is_available()
                               else "torch.profiler: CPU tensor allocations (train/tensor_peak.py)"),
        "estimated_peak_memory_bytes": here.peak_bytes,
        "estimate": here.to_dict(),
        "per_worker": {"workers": workers,
                       "estimated_peak_memory_bytes": there.peak_bytes,
                       "estimate": there.to_dict(),
                       "communication_bytes_per_step": comm.total_bytes,
                       "communication": comm.to_dict()},
    }


def run(
    job: Path = typer.Argument(..., help="Job YAML file."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    steps: int | None = typer.Option(None, "--steps", min=1, help="Stop after N steps."),
    dry_run: bool = typer.Option(
        False, "--dry-run",
        help=f"Run {DRY_RUN_STEPS} steps, write nothing, print throughput and estimates.",
    ),
    peak_flops: float | None = typer.Option(
        None, "--peak-flops", help="Peak FLOP/s of this device for MFU (default: table or "
        "measured CPU GEMM)."),
    json_out: bool = typer.Option(
        False, "--json", help="With --dry-run: print its figures (measured and estimated peak "
        "memory, communication per step) as JSON on stdout, the progress bar on stderr."),
) -> None:
    """Train a job here: one process, one GPU if present else the CPU."""
    from phmscale.data.check import check_job_data
    from phmscale.errors import InvalidInputError
    from phmscale.train.job import Launch, run_job

    if json_out and not dry_run:
        raise InvalidInputError("--json prints a dry run's figures: add --dry-run, or drop "
                                "--json (a training run prints its summary table)")
    spec = load_job(job, set_)
    workers = spec.resources.workers  # the job's: its estimates are per worker of the job
    if spec.resources.workers != 1:  # one process here: the run (and its identity) says so
        resources = spec.resources.model_copy(update={"workers": 1})
        spec = spec.model_copy(update={"resources": resources})
    check_job_data(spec, str(job), world_size=1)
    if not dry_run:  # refused before the progress bar: another run's folder, or one in use
        from phmscale.train.run_folder import probe

        probe(spec, spec.checkpoint_dir)
    total = DRY_RUN_STEPS if dry_run else (steps or spec.train.steps)
    columns = [TextColumn("[bold]{task.description}"), BarColumn(),
               TextColumn("{task.completed}/{task.total}"),
               TextColumn("loss {task.fields[loss]:.4f}"),
               TextColumn("{task.fields[rate]:.0f} samples/s"), TextColumn("{task.fields[q]}"),
               TimeElapsedColumn()]
    bar = Console(stderr=True) if json_out else console  # stdout: the JSON alone
    with Progress(*columns, console=bar, transient=False) as progress:
        launch = Launch("local", late_hooks=[ProgressHook(progress, total)], max_steps=total,
                        dry_run=dry_run, peak_flops=peak_flops)
        result = run_job(spec, launch)
    if json_out:
        print(json.dumps(dry_run_json(spec, result, workers), indent=2))
    elif dry_run:
        console.print(dry_run_table(spec, result, workers))
    else:
        console.print(summary_table(spec, result))
    if result.status == "interrupted":
        console.print(f"[yellow]interrupted at step {result.step}; checkpoint "
                      f"{spec.mask(result.checkpoint or 'none')}. Run the same command to "
                      "resume.[/]")
        raise typer.Exit(130)


def register(app: typer.Typer) -> None:
    app.command()(run)

