"""`phmscale export` and `phmscale eval`: a trained job's checkpoint as a model to take away,
and its validation figures again."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from phmscale.cli.job import SET_HELP
from phmscale.spec import load_job

console = Console()
CHECKPOINT_HELP = ("A step_* folder, or a folder holding them; default the newest save of the "
                   "job's run (the job and --set values name the run, as for `run`).")


def export(
    job: Path = typer.Argument(..., help="Job YAML file the run was trained from."),
    out: Path = typer.Option(..., "--out", help="Export folder to write."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    checkpoint: str | None = typer.Option(None, "--checkpoint", help=CHECKPOINT_HELP),
    fold_dense: bool = typer.Option(
        False, "--fold-dense", help="Fold every PHM layer into the dense layer it equals "
        "(plain nn.Linear / nn.Conv weights, the dense twin's size)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Consolidate a checkpoint (any ZeRO stage, any worker count) into model.safetensors,
    with the job (secrets as ***) and a model card; load it with
    `phmscale.models.load_pretrained(DIR)`."""
    from dataclasses import asdict

    from phmscale.train.export import export as run_export

    spec = load_job(job, set_)
    result = run_export(spec, out, checkpoint, fold_dense)
    if as_json:
        typer.echo(json.dumps(asdict(result), indent=2))
        return
    what = "dense (folded)" if result.folded else f"{spec.model.algebra}, n = {spec.model.algebra_dim}"
    console.print(f"exported step {result.step} of {spec.name} ({what}, {result.params:,} "
                  f"parameters; dense twin {result.twin_params:,}) to {out}", highlight=False)


def eval_(
    job: Path = typer.Argument(..., help="Job YAML file the run was trained from."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    checkpoint: str | None = typer.Option(None, "--checkpoint", help=CHECKPOINT_HELP),
    split: str = typer.Option("val", "--split", help="val or train."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Evaluate a checkpoint as the training loop does (loss and accuracy or bits/byte)."""
    from phmscale.errors import InvalidInputError
    from phmscale.train.export import evaluate_checkpoint

    if split not in ("val", "train"):
        raise InvalidInputError(f"--split {split!r}: use val or train")
    spec = load_job(job, set_)
    ref, metrics = evaluate_checkpoint(spec, checkpoint, split)
    if as_json:
        typer.echo(json.dumps({"step": ref.step, "checkpoint": spec.mask(str(ref.path)),
                               **metrics}, indent=2))
        return
    console.print(f"{spec.name} at step {ref.step} ({split}): "
                  + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()), highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(export)
    app.command(name="eval")(eval_)
