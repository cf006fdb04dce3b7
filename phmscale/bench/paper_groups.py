"""The report's rows: a suite's sweeps read back from MLflow (`sweep_rows`: one row per group
of cells that differ only in the seed, mean ± std over seeds), each with the spec it trained.

A sweep is re-expanded from the settings the suite recorded, so a row knows its planned cells
(a cell that never reached MLflow still counts as failed) and its job's facts (steps, split
sizes, pruning schedule) for the report's prose.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from phmscale.spec import JobSpec

PHM, ATTN, RESNET, LM, PRUNE = "phm", "attn", "resnet", "lm", "prune"
# Sweep file stem → report section, in the order the report shows them.
SECTIONS = {"phm-digits": PHM, "phm-mnist1d": PHM, "attn-digits": ATTN,
            "resnet-digits": RESNET, "lm-pystdlib": LM, "prune-resnet": PRUNE}
SEED = "train.seed"
ALGEBRAS = {"real": "ℝ (real)", "complex": "ℂ (complex)", "quaternion": "ℍ (quaternion)",
            "m2r": "M₂(ℝ)", "m4r": "M₄(ℝ)", "phc4": "PHC n=4 (learned)"}
ATTN_LABELS = {"full": "full (MLP)", "nomlp": "no MLP", "qk": "collapsed QK",
               "sym": "symmetric QK", "qkvo": "collapsed QK+VO", "minimal": "minimal (QK, no VO)"}


@dataclass
class Group:
    """One table row: a case (and grid point) of one sweep, over its seeds."""

    stem: str  # the sweep file's stem
    case: str
    label: str
    spec: JobSpec  # its first cell's job
    stats: dict[str, Any] = field(default_factory=dict)  # the sweep_rows group (means, stds)
    cells: list[dict[str, Any]] = field(default_factory=list)  # sweep_rows cells (run ids)
    planned: list[str] = field(default_factory=list)  # its cells' labels
    algebra_flops: float | None = None  # AlgebraNets' count, from the spec (ResNets only)
    params_nonzero: float | None = None  # pruned cells: parameters left

    @property
    def section(self) -> str:
        return SECTIONS.get(self.stem, self.stem)

    @property
    def mean(self) -> float | None:
        return self.stats.get("final_quality")

    @property
    def std(self) -> float | None:
        return self.stats.get("final_quality_std")

    @property
    def params(self) -> float | None:
        return self.stats.get("params")

    @property
    def flops(self) -> float | None:
        return self.stats.get("flops_per_sample")

    @property
    def finished(self) -> list[dict[str, Any]]:
        return [c for c in self.cells if c["status"] == "FINISHED"]

    @property
    def failed(self) -> list[str]:
        done = {c["cell"] for c in self.finished}
        return [label for label in self.planned if label not in done]

    @property
    def density(self) -> float | None:
        """Compute density, AlgebraNets' measure: their forward FLOPs per sample per parameter
        (the executed count when theirs is unknown)."""
        flops = self.algebra_flops or self.flops
        return flops / self.params if flops and self.params else None

    @property
    def sparsity(self) -> float | None:
        return float(self.stats["train.prune.sparsity"]) if "train.prune.sparsity" in \
            self.stats else None


def label(stem: str, case: str, spec: JobSpec) -> str:
    if stem.startswith("phm-"):
        return f"{stem[4:]} n={spec.model.n}"
    if stem.startswith("attn"):
        return ATTN_LABELS.get(case, case)
    if stem.startswith("lm"):
        return "dense" if spec.model.algebra == "real" else f"PHM n={spec.model.n}"
    name = ALGEBRAS.get(case, case)
    return f"{name} {spec.train.prune.sparsity * 100:.0f}%" if stem.startswith("prune") else name


def val_size(spec: JobSpec) -> int | None:
    """Samples (bytes, for an LM) one evaluation reads: eval_batches' worth, else the built-in
    validation split's count from its shards.json."""
    per = spec.model.seq_len if spec.model.task == "causal_lm" else 1
    if spec.train.eval_batches:
        return spec.train.eval_batches * spec.data.batch_size * per
    name = spec.data.val.removeprefix("builtin:") if spec.data.val else ""
    if not spec.data.val or name == spec.data.val:
        return None
    from phmscale.data.index import read_index
    from phmscale.data.prepare import ensure_builtin

    index = read_index(str(ensure_builtin(name, spec.data.cache_dir, progress=False)))
    return index["splits"]["val"]["count"] * per if index else None


def _key(values: dict[str, Any]) -> tuple[str, ...]:
    return tuple(str(v) for k, v in values.items() if k != SEED)


def load_groups(record: dict) -> list[Group]:
    """Every sweep's groups in plan order, their numbers from MLflow (none if it never ran)."""
    from phmscale.errors import InvalidInputError
    from phmscale.models.flops import algebra_forward_flops
    from phmscale.spec.sweep import SweepSpec, expand
    from phmscale.tracking.compare import fetch_rows
    from phmscale.tracking.sweep_compare import sweep_rows

    out: list[Group] = []
    for entry in record["sweeps"]:
        sweep = expand(SweepSpec(**entry["settings"]), entry["extra_sets"])
        try:
            axes, cells, stats = sweep_rows(record["tracking_uri"], entry["sweep_id"])
        except InvalidInputError:  # no parent run: the sweep's job never started
            axes, cells, stats = [], [], []
        keys = [a for a in axes if a != SEED]
        groups: dict[tuple[str, ...], Group] = {}
        for cell in sweep.cells:
            case = str(cell.values.get("case", ""))
            group = groups.setdefault(_key(cell.values), Group(
                entry["stem"], case, label(entry["stem"], case, cell.spec), cell.spec))
            group.planned.append(cell.label)
        for row in stats:
            if (g := groups.get(tuple(str(row[k]) for k in keys))) is not None:
                g.stats = row
        for row in cells:
            if (g := groups.get(tuple(str(row[k]) for k in keys))) is not None:
                g.cells.append(row)
        for g in groups.values():
            if g.section == RESNET:
                g.algebra_flops = float(algebra_forward_flops(g.spec.model))
            if g.section == PRUNE and g.finished:  # not a sweep_rows figure: the run's own
                (run,) = fetch_rows(record["tracking_uri"], [g.finished[0]["run_id"]])
                g.params_nonzero = run.params_nonzero
        out.extend(groups.values())
    return out
