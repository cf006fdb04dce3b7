"""Verbs that read a job file without running it: `validate` and `schema`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from phmscale.spec import JobSpec, job_schema, load_job
from phmscale.spec.load import reference_markdown

console = Console()

SET_HELP = "Override a field: --set train.steps=20 (repeatable; values read as YAML)."


def summary_table(spec: JobSpec, title: str) -> Table:
    """A short human summary of a resolved job."""
    m, t, r = spec.model, spec.train, spec.resources
    shown = spec.public_dump()  # data URLs and tracking URIs may hold secrets
    d, tracking = shown["data"], shown["tracking"]
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("section", style="bold cyan")
    table.add_column("value")
    arch = m.arch if m.kind == "resnet" else f"dim {m.dim} × depth {m.depth}, {m.heads} heads"
    table.add_row("name", spec.name)
    table.add_row("model", f"{m.kind} ({arch}), task {m.task}")
    table.add_row("algebra", f"{m.algebra}, n = {m.algebra_dim}")
    if m.kind == "phm_transformer":
        table.add_row("attention", f"{m.attention}, mlp_ratio {m.mlp_ratio:g}")
    table.add_row("data", f"train {d['train']}" + (f", val {d['val']}" if d["val"] else ""))
    table.add_row(
        "batch",
        f"{d['batch_size']}/worker × accum {t.grad_accum} × {r.workers} workers = "
        f"{spec.global_batch_size()} per step",
    )
    table.add_row(
        "train",
        f"{t.steps} steps, {t.optimizer.name} lr {t.optimizer.lr:g}, {t.precision}, "
        f"ZeRO-{t.zero_stage}",
    )
    if t.prune.enabled:
        p = t.prune
        ramp = (f"at step {p.start_step}" if p.last_step == p.start_step
                else f"steps {p.start_step}→{p.last_step}, every {p.every}")
        table.add_row("prune", f"{p.sparsity:.0%} of algebra elements ({p.scope}), {ramp}")
    table.add_row("checkpoint", f"{spec.mask(spec.checkpoint_dir)} every "
                                f"{spec.checkpoint.every} (fingerprint {spec.fingerprint()})")
    device = f"{r.gpus_per_worker:g} GPU" if r.gpus_per_worker else f"{r.cpus_per_worker:g} CPU"
    table.add_row("resources", f"{r.workers} workers × {device}")
    table.add_row("tracking", f"{tracking['uri'] or '$MLFLOW_TRACKING_URI or sqlite'} "
                              f"/ {tracking['experiment']}")
    return table


def validate(
    job: Path = typer.Argument(..., help="Job YAML file."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    no_data: bool = typer.Option(
        False, "--no-data", help="Check the job without its data: the spec and the model, not "
        "the shards or tokenizer it names (a recipe before its data is packed)."),
) -> None:
    """Validate a job file and print the resolved job (exit 2 with the errors if invalid)."""
    spec = load_job(job, set_)
    if not no_data:
        from phmscale.data.check import check_job_data

        check_job_data(spec, str(job))
    title = f"{job}: valid" + (" (data not checked: --no-data)" if no_data else "")
    console.print(summary_table(spec, title))


def schema(
    out: Path | None = typer.Option(None, "--out", help="Write the schema to this file."),
    markdown: bool = typer.Option(
        False, "--markdown", help="The field reference as a Markdown table instead."
    ),
) -> None:
    """Print (or write) the JSON schema of job files, for editor completion."""
    text = reference_markdown() if markdown else json.dumps(job_schema(), indent=2)
    if out is None:
        typer.echo(text)
    else:
        out.write_text(text + "\n")
        console.print(f"wrote {out}")


def register(app: typer.Typer) -> None:
    app.command()(validate)
    app.command()(schema)
