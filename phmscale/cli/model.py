"""`phmscale model …`: inspect the network a job file describes, without training it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from phmscale.cli.job import SET_HELP
from phmscale.spec import load_job

if TYPE_CHECKING:  # phmscale.models imports torch: only `model` verbs should pay for it
    from phmscale.models import ModelSummary

console = Console()
model_app = typer.Typer(
    help="Inspect the model of a job file: parameters, savings, FLOPs, memory.",
    no_args_is_help=True,
)


def _si(x: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def _mib(b: int) -> str:
    return f"{b / 2**20:.2f} MiB"


def summary_table(s: ModelSummary) -> Table:
    table = Table(title=f"{s.job}: model summary", show_header=False, title_justify="left")
    table.add_column("quantity", style="bold cyan")
    table.add_column("value")
    table.add_row("model", f"{s.kind} ({s.arch}), task {s.task}")
    table.add_row("algebra", f"{s.algebra}, n = {s.n}")
    table.add_row("parameters", f"{s.params_total:,} total, {s.params_trainable:,} trainable")
    for kind, count in s.params_by_kind.items():
        table.add_row(f"  {kind}", f"{count:,}")
    table.add_row("dense twin", f"{s.twin_params:,} parameters (algebra real)")
    table.add_row("savings", f"{s.savings_ratio:.2f}× fewer parameters than the dense twin; "
                             f"algebra layers {s.algebra_layer_params:,} vs "
                             f"{s.twin_algebra_layer_params:,} ({s.algebra_layer_savings:.2f}×)")
    table.add_row("forward FLOPs", f"{_si(s.forward_flops_analytic)} per sample ({s.sample}); "
                                   f"measured {_si(s.forward_flops_measured)} "
                                   f"(Δ {100 * s.flops_rel_diff:.2f}%)")
    table.add_row("  weight build", f"{_si(s.materialize_flops_per_forward)} per forward "
                                    "(Σ Aᵢ⊗Sᵢ, independent of batch)")
    table.add_row("  AlgebraNets count", _si(s.algebra_flops))
    table.add_row("training FLOPs", f"{_si(s.train_flops_per_sample)} per sample (3 × forward)")
    table.add_row("compute density", f"{s.flops_per_param:.1f} forward FLOPs per parameter")
    m = s.memory
    table.add_row(
        "memory / worker",
        f"{_mib(m.total_bytes)}: params {_mib(m.params_bytes)}, grads {_mib(m.grads_bytes)}, "
        f"{m.optimizer} states {_mib(m.optimizer_bytes)} ({m.precision}, ZeRO-{m.zero_stage}, "
        f"{m.workers} worker{'s' if m.workers > 1 else ''}; activations not included)",
    )
    return table


@model_app.command()
def summary(
    job: Path = typer.Argument(..., help="Job YAML file."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Parameters (by layer kind, vs the dense twin), FLOPs per sample, memory per worker."""
    from phmscale.models import summarize

    result = summarize(load_job(job, set_))
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        console.print(summary_table(result))


def register(app: typer.Typer) -> None:
    app.add_typer(model_app, name="model")
