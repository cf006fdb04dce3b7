"""A sweep: one job and its axes (a grid, seeds, random draws), expanded into cells that are
each the job with `--set`-style overrides and validated before anything starts.

A sweep file names the job and its axes (paths relative to the sweep file):

    sweep:
      job: ../jobs/quickstart.yaml
      cases: {dense: [model.algebra=real], phm: [model.algebra=phm]}   # named override sets
      grid: {model.n: [1, 2, 4, 8]}
      seeds: 3                                     # train.seed = 0, 1, 2 for every grid point
      sample: {train.optimizer.lr: loguniform(1e-4, 1e-2)}
      trials: 4                                    # draws of `sample` per grid point
      max_concurrent: 2
      stop: asha:val_accuracy                      # early stopping; null: every cell to the end
      set: [train.steps=200]                       # overrides of every cell

`phmscale sweep JOB.yaml --grid model.n=1,2,4,8 --seeds 3 …` builds the same thing from flags.
Draws come from a generator seeded by `sample_seed`, so the same sweep expands to the same cells
on every submission: that is what lets a resubmitted sweep skip its finished cells.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from phmscale.spec.job import JobSpec
from phmscale.spec.load import load_job
from phmscale.spec.problems import JobSpecError, Problem

# Fields a cell may not vary: they say where the sweep's runs live and are logged, which every
# cell shares (each cell's own folder is made from its fingerprint).
FIXED_PREFIXES = ("name", "checkpoint.", "tracking.", "resources.workers")
# Early-stopping metrics and whether larger is better.
STOP_METRICS = {"val_accuracy": "max", "val_loss": "min", "val_bpb": "min", "loss": "min"}
CASE = "case"  # the axis of `cases`: a cell's case name (not a job field)
_DRAW = re.compile(r"^\s*(uniform|loguniform|randint|choice)\s*\((.*)\)\s*$")


class SweepSpec(BaseModel):
    """The `sweep:` section of a sweep file (or the flags of `phmscale sweep`)."""

    model_config = ConfigDict(extra="forbid")

    job: str = Field(..., description="The job file every cell starts from.")
    name: str | None = Field(None, description="Sweep name; default `<job name>-sweep`.")
    cases: dict[str, list[str]] = Field(default_factory=dict, description=(
        "Named sets of overrides (key=value), for settings that go together and are not a "
        "product (e.g. dense: [model.algebra=real], phm4: [model.n=4]); crossed with grid."))
    grid: dict[str, list[Any]] = Field(default_factory=dict, description=(
        "Field → values: every combination is a grid point."))
    seeds: int | None = Field(None, ge=1, description=(
        "Seeds per grid point (train.seed = 0 … seeds-1); None: the job's seed."))
    sample: dict[str, str] = Field(default_factory=dict, description=(
        "Field → uniform(a, b) | loguniform(a, b) | randint(a, b) | choice(v1, v2, …)."))
    trials: int = Field(1, ge=1, description="Draws of `sample` per grid point.")
    sample_seed: int = Field(0, description="Seed of the draws (the same cells every time).")
    max_concurrent: int | None = Field(None, ge=1, description=(
        "Cells in flight at once; None: as many as the cluster's CPUs (GPUs) hold."))
    stop: str | None = Field(None, description=(
        "asha:METRIC (val_accuracy, val_loss, val_bpb, loss): stop weak cells early."))
    set: list[str] = Field(default_factory=list, description="Overrides of every cell.")

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: str | None) -> str | None:
        if value is None:
            return None
        kind, _, metric = value.partition(":")
        if kind != "asha" or metric not in STOP_METRICS:
            raise ValueError(f"stop {value!r}: use asha:METRIC with METRIC one of "
                             f"{', '.join(STOP_METRICS)}")
        return value

    @field_validator("sample")
    @classmethod
    def _sample(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            parse_draw(key, text)
        return value

    @property
    def stop_metric(self) -> tuple[str, str] | None:
        """(metric, mode) of ASHA, or None."""
        if self.stop is None:
            return None
        metric = self.stop.partition(":")[2]
        return metric, STOP_METRICS[metric]


@dataclass
class Cell:
    """One training run of the sweep: its overrides, the values it sweeps, its spec."""

    index: int
    label: str  # short and readable: "n=4,seed=1"
    values: dict[str, Any]  # swept field → value
    overrides: list[str]
    spec: JobSpec = field(repr=False)


@dataclass
class Sweep:
    settings: SweepSpec
    name: str
    job_path: Path
    cells: list[Cell]

    @property
    def axes(self) -> list[str]:
        return list(self.cells[0].values) if self.cells else []

    @property
    def sweep_id(self) -> str:
        """`<name>-<8 hex>` over the cells' fingerprints: the same sweep (same cells) has the
        same id on every submission, which finds its MLflow parent run again."""
        digest = hashlib.sha256(
            "\n".join(sorted(c.spec.fingerprint() for c in self.cells)).encode()).hexdigest()
        return f"{self.name}-{digest[:8]}"


def parse_draw(key: str, text: str) -> tuple[str, list[Any]]:
    """`loguniform(1e-4, 1e-2)` → ("loguniform", [0.0001, 0.01]); a clear error otherwise."""
    match = _DRAW.match(str(text))
    if not match:
        raise ValueError(f"sample {key}={text!r}: use uniform(a, b), loguniform(a, b), "
                         "randint(a, b) or choice(v1, v2, …)")
    kind, inner = match.groups()
    args = [_scalar(part) for part in inner.split(",")] if inner.strip() else []
    if not args:
        raise ValueError(f"sample {key}={text!r}: no arguments")
    if kind != "choice":
        if len(args) != 2 or not all(isinstance(a, (int, float)) for a in args):
            raise ValueError(f"sample {key}={text!r}: {kind} takes two numbers (low, high)")
        low, high = args
        if not low < high or (kind == "loguniform" and low <= 0):
            raise ValueError(f"sample {key}={text!r}: needs 0 < low < high" if kind ==
                             "loguniform" else f"sample {key}={text!r}: needs low < high")
    return kind, args


def _scalar(text: str) -> Any:
    """`1e-4` → 0.0001 (YAML 1.1 reads it as a string), `2` → 2, else YAML's reading."""
    text = text.strip()
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _draw(kind: str, args: list[Any], rng: random.Random) -> Any:
    if kind == "uniform":
        return rng.uniform(args[0], args[1])
    if kind == "loguniform":
        return math.exp(rng.uniform(math.log(args[0]), math.log(args[1])))
    if kind == "randint":
        return rng.randint(int(args[0]), int(args[1]) - 1)  # high exclusive, as Tune's
    return rng.choice(args)


def _text(value: Any) -> str:
    """A value as an override's right-hand side (YAML flow form: lists, numbers, strings)."""
    if isinstance(value, float):
        return repr(value)
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...")


def _short(key: str, value: Any) -> str:
    shown = f"{value:.3g}" if isinstance(value, float) else _text(value)
    return f"{key.rsplit('.', 1)[-1]}={shown}"


def grid_from_flags(flags: Iterable[str]) -> dict[str, list[Any]]:
    """`--grid model.n=1,2,4` → {"model.n": [1, 2, 4]} (each value read as YAML)."""
    grid: dict[str, list[Any]] = {}
    for flag in flags:
        key, has, raw = flag.partition("=")
        if not has or not key.strip() or not raw.strip():
            raise JobSpecError("--grid", [Problem("", f"--grid {flag!r}: use key=v1,v2,…")])
        grid[key.strip()] = [_scalar(v) for v in raw.split(",")]
    return grid


def sample_from_flags(flags: Iterable[str]) -> dict[str, str]:
    """`--sample train.optimizer.lr=loguniform(1e-4,1e-2)` → {"train.optimizer.lr": "…"}."""
    out = {}
    for flag in flags:
        key, has, text = flag.partition("=")
        if not has or not key.strip():
            raise JobSpecError("--sample", [Problem("", f"--sample {flag!r}: use "
                                                        "key=loguniform(a,b) (or uniform, "
                                                        "randint, choice)")])
        out[key.strip()] = text
    return out


def read_sweep_file(path: Path) -> SweepSpec:
    """The `sweep:` section of a sweep file, its job path made relative to the caller."""
    from pydantic import ValidationError

    from phmscale.spec.load import _problems_from
    from phmscale.spec.yaml_safe import compose_job_yaml

    data, lines = compose_job_yaml(path.read_bytes(), str(path))
    if not isinstance(data, dict) or set(data) != {"sweep"}:
        raise JobSpecError(str(path), [Problem("", "a sweep file holds one `sweep:` mapping "
                                                   "(job, grid, seeds, sample, …)")])
    try:
        spec = SweepSpec.model_validate(data["sweep"])
    except ValidationError as error:
        raise JobSpecError(str(path), [Problem("sweep." + p.field, p.message, p.line)
                                       for p in _problems_from(error, {}, SweepSpec)]) from None
    job = Path(spec.job)
    job = job if job.is_absolute() else path.parent / job
    if not job.is_file():
        raise JobSpecError(str(path), [Problem("sweep.job", f"{spec.job}: no such job file "
                                                            f"(looked for {job.resolve()}; a relative "
                                                            "path is read from the sweep "
                                                            "file's folder)")])
    return spec.model_copy(update={"job": str(job)})


def is_sweep_file(path: Path) -> bool:
    try:
        head = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return False
    return isinstance(head, dict) and "sweep" in head


def expand(settings: SweepSpec, extra_sets: Sequence[str] = ()) -> Sweep:
    """Every cell of the sweep, each validated as the job it is (a bad cell fails the whole
    sweep, naming the cell and the field), each with a checkpoint folder of its own."""
    job_path = Path(settings.job)
    base = load_job(job_path, [*settings.set, *extra_sets])
    case_keys = {text.partition("=")[0].strip() for sets in settings.cases.values()
                 for text in sets}
    problems = [Problem(key, "a sweep cannot vary it: every cell shares the sweep's name, "
                             "storage, tracking and worker count")
                for key in [*settings.grid, *settings.sample, *sorted(case_keys)]
                if key.startswith(FIXED_PREFIXES)]
    problems += [Problem(f"cases.{name}", f"{text!r}: use key=value")
                 for name, sets in settings.cases.items() for text in sets if "=" not in text]
    problems += [Problem(key, "is set by a case and is a grid or sample axis too")
                 for key in sorted(case_keys & {*settings.grid, *settings.sample})]
    problems += [Problem(key, "appears in both grid and sample")
                 for key in set(settings.grid) & set(settings.sample)]
    problems += [Problem(f"grid.{key}", "no values") for key, v in settings.grid.items() if not v]
    if settings.seeds and "train.seed" in {*settings.grid, *settings.sample}:
        problems.append(Problem("seeds", "train.seed is also an axis: use one or the other"))
    if problems:
        raise JobSpecError(f"sweep of {job_path}", problems)
    draws = [(key, *parse_draw(key, text)) for key, text in settings.sample.items()]
    rng = random.Random(settings.sample_seed)
    points = list(itertools.product(*settings.grid.values())) or [()]
    trials = settings.trials if draws else 1
    seeds = list(range(settings.seeds)) if settings.seeds else [None]
    cases = list(settings.cases.items()) or [(None, [])]
    cells: list[Cell] = []
    for case, case_sets in cases:
        for point in points:
            for _ in range(trials):
                values = {} if case is None else {CASE: case}
                values.update(zip(settings.grid, point, strict=True))
                values.update({key: _draw(kind, args, rng) for key, kind, args in draws})
                for seed in seeds:
                    cell_values = dict(values) if seed is None else {**values,
                                                                     "train.seed": seed}
                    cells.append(_cell(len(cells), cell_values, job_path,
                                       [*settings.set, *extra_sets, *case_sets], base))
    _check_distinct(cells, job_path)
    return Sweep(settings, settings.name or f"{base.name}-sweep", job_path, cells)


def _cell(index: int, values: dict[str, Any], job_path: Path, sets: list[str],
          base: JobSpec) -> Cell:
    label = ",".join(str(v) if k == CASE else _short(k, v) for k, v in values.items()) or "base"
    overrides = [*sets, *(f"{k}={_text(v)}" for k, v in values.items() if k != CASE)]
    try:
        spec = load_job(job_path, overrides)
        if base.checkpoint.dir is not None:  # a named folder: one sub-folder per cell
            folder = f"{base.checkpoint.dir.rstrip('/')}/{spec.fingerprint()}"
            spec = load_job(job_path, [*overrides, f"checkpoint.dir={folder}"])
    except JobSpecError as error:
        raise JobSpecError(f"{job_path} (sweep cell {index}: {label})",
                           error.problems) from None
    return Cell(index, label, values, overrides, spec)


def _check_distinct(cells: list[Cell], job_path: Path) -> None:
    seen: dict[str, Cell] = {}
    for cell in cells:
        twin = seen.setdefault(cell.spec.fingerprint(), cell)
        if twin is not cell:
            raise JobSpecError(f"sweep of {job_path}", [Problem(
                "", f"cells {twin.index} ({twin.label}) and {cell.index} ({cell.label}) train "
                    "the same run (the same fingerprint): sweep fields that change what is "
                    "trained (train.steps, eval and tracking fields do not)")])
