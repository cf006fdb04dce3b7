"""Grouping the suite's MLflow rows by cell group and reducing seeds to mean ± std.

Rows come from `phmscale.tracking.compare.fetch_rows` (what `phmscale compare` tabulates); the
run name is the cell's job name, `paper-<suite>-<group>-s<seed>`, which maps a row back to its
cell. The quality is the *final* evaluation (the last step), not the best one: the best over
4 evaluations on the same split would be picked with the split it is reported on.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from phmscale.tracking.compare import RunRow


@dataclass
class Group:
    """One table row: the runs of one cell group (one per seed)."""

    group: str
    label: str
    section: str
    rows: list[RunRow] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)  # wall time per cell, submit → end
    failed: list[str] = field(default_factory=list)  # cell keys that did not succeed
    algebra_flops: float | None = None  # AlgebraNets' count, from the spec (ResNets only)

    def _values(self, attr: str) -> list[float]:
        out = []
        for row in self.rows:
            value = getattr(row, attr)
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                out.append(float(value))
        return out

    @property
    def quality(self) -> list[float]:
        return self._values("final_quality")

    def first(self, attr: str) -> float | None:
        """A value every seed shares (parameters, FLOPs): the first run's."""
        values = self._values(attr)
        return values[0] if values else None

    @property
    def density(self) -> float | None:
        """Compute density, AlgebraNets' measure: their forward FLOPs per sample per parameter
        (the executed count when theirs is unknown)."""
        flops, params = self.algebra_flops or self.first("flops_per_sample"), self.first("params")
        return flops / params if flops and params else None

    @property
    def run_ids(self) -> list[str]:
        return [r.run_id for r in self.rows]


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n − 1); std is None below two values."""
    if not values:
        return None, None
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def fmt_mean_std(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    """'97.2 ± 0.4' (scale 100 for percentages); '–' with no values; no ± for one value."""
    mean, std = mean_std(values)
    if mean is None:
        return "–"
    text = f"{mean * scale:.{digits}f}"
    return text + (f" ± {std * scale:.{digits}f}" if std is not None else "")


def group_rows(rows: list[RunRow], cells: list[dict], suite: str) -> dict[str, Group]:
    """Groups in plan order; `cells` are the suite record's entries (cell, status, seconds)."""
    by_name = {row.name: row for row in rows}
    groups: dict[str, Group] = {}
    for entry in cells:
        cell = entry["cell"]
        group = groups.setdefault(cell["group"], Group(cell["group"], cell["label"],
                                                       cell["section"]))
        key = f"{cell['group']}-s{cell['seed']}"
        row = by_name.get(f"paper-{suite}-{key}")
        group.seconds.append(float(entry["seconds"]))
        if entry["status"] != "SUCCEEDED" or row is None or row.final_quality is None:
            group.failed.append(key)
        else:
            group.rows.append(row)
    return groups
