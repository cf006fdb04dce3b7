"""`phmscale bench layer | generate | loader | step`: ratios measured side by side in one run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from phmscale.cli.job import SET_HELP

console = Console()
bench_app = typer.Typer(help="Benchmarks: ratios measured side by side in one run.",
                        no_args_is_help=True)


def _show(rows: list[dict[str, Any]], title: str, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=title, title_justify="left")
    columns = list(rows[0]) if rows else []
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column)
            cells.append(f"{value:.3g}" if isinstance(value, float) else str(value))
        table.add_row(*cells)
    console.print(table)


@bench_app.command()
def layer(
    as_json: bool = typer.Option(False, "--json", help="Print rows as JSON."),
    quick: bool = typer.Option(False, "--quick", help="A small grid (seconds, for smoke tests)."),
) -> None:
    """PHMLinear against nn.Linear and a loop-of-kron reference: training and decode."""
    from phmscale.bench.layer import run

    _show(run(quick=quick), "bench layer (ratios > 1: PHM faster)", as_json)


@bench_app.command()
def generate(
    as_json: bool = typer.Option(False, "--json", help="Print rows as JSON."),
    quick: bool = typer.Option(False, "--quick", help="One tiny model (seconds, for smoke tests)."),
) -> None:
    """Greedy KV-cache generation tokens/s: PHM n = 2…16 against the dense twin, with rooflines."""
    from phmscale.bench.generate import run

    _show(run(quick=quick), "bench generate (phm_vs_dense > 1: PHM faster)", as_json)


@bench_app.command()
def loader(
    as_json: bool = typer.Option(False, "--json", help="Print rows as JSON."),
    quick: bool = typer.Option(False, "--quick", help="A small run (seconds)."),
    source: str = typer.Option("synthetic", "--source", help="synthetic (uint8 3×32×32), jpeg "
                               "(ImageNet-like JPEGs, imagenet augment at 224: per worker "
                               "against a tight decode + augment loop, 1 and 2 workers) or a "
                               "built-in name: digits, mnist1d, pystdlib."),
    workers: int = typer.Option(2, "--workers", min=0, help="Loader worker processes."),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Samples per batch."),
) -> None:
    """The WebDataset training loader against a plain sequential read of the same shards (or,
    for --source jpeg, against a tight decode + augment loop)."""
    from phmscale.bench.loader import run

    rows = run(quick=quick, source=source, workers=workers, batch_size=batch_size)
    _show(rows, "bench loader (ratio: loader ÷ plain read)", as_json)


@bench_app.command()
def step(
    job: Path = typer.Argument(..., help="Job YAML file."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    steps: int | None = typer.Option(None, "--steps", min=6, help="Steps per contender and "
                                     "round (3 are warm-up); default: the job's train.steps, "
                                     "at most 300."),
    rounds: int = typer.Option(6, "--rounds", min=1, help="Paired rounds (each runs every "
                               "contender once; ratios are the median over rounds)."),
    as_json: bool = typer.Option(False, "--json", help="Print rows as JSON."),
) -> None:
    """The full engine (DeepSpeed + WebDataset) against a bare PyTorch loop on the same batches."""
    from phmscale.bench.step import run
    from phmscale.spec import load_job

    _show(run(load_job(job, set_), steps=steps, rounds=rounds), "bench step (engine ÷ bare)",
          as_json)


@bench_app.command()
def paper(
    out: Path = typer.Option(Path("docs/results.md"), "--out", help="The report to write; its "
                             "plots go to <out dir>/<out stem>/*.png."),
    quick: bool = typer.Option(False, "--quick", help="One 20-step cell of three sweeps and "
                               "the quick benchmarks (a smoke test; the numbers mean nothing)."),
    address: str | None = typer.Option(None, "--address", help="Ray dashboard URL to submit the "
                                       "sweeps to; default: one local Ray cluster for the suite."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help="MLflow store; default "
                                            "sqlite:///<store>/mlflow.db."),
    store: Path = typer.Option(Path("out/paper"), "--store", help="Where the suite keeps its "
                               "MLflow store, cells' folders (a rerun resumes them), failed "
                               "sweeps' logs and suite records."),
    parallel: int = typer.Option(2, "--parallel", min=1, help="Cells in flight at once, each "
                                 "sweep's max_concurrent (each cell takes one CPU)."),
    suite: str | None = typer.Option(None, "--suite", help="Re-render the report of a finished "
                                     "suite (its id) from MLflow; trains nothing."),
) -> None:
    """The papers' claims at small scale: jobs/paper/sweeps/*.yaml, each sweep one Ray job
    (`phmscale sweep`'s path), tables from MLflow."""
    from phmscale.bench.paper import run_suite, suite_file, write_report
    from phmscale.errors import InvalidInputError

    if suite is not None:
        path = suite_file(store, suite)
        if not path.is_file():
            raise InvalidInputError(f"--suite {suite}: no {path}; suites there: "
                                    + ", ".join(p.stem[6:] for p in store.glob("suite-*.json")))
        for written in write_report(path, out):
            console.print(f"wrote {written}", highlight=False)
        return
    run_suite(out, store=store, quick=quick, address=address, tracking_uri=tracking_uri,
              parallel=parallel, log=lambda line: console.print(line, highlight=False))


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")
