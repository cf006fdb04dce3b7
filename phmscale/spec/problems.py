"""What is wrong with a job: `Problem` (where, what to do) and `JobSpecError` (all of them).

Its own module so the readers of a job file (`load`, `yaml_safe`) share it without importing
each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from phmscale.errors import InvalidInputError


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a job: where (dotted field path, YAML line) and what to do."""

    field: str
    message: str
    line: int | None = None

    def render(self, source: str) -> str:
        where = f"{source}:{self.line}" if self.line else source
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class JobSpecError(InvalidInputError):
    """An invalid job: the message lists every problem found."""

    def __init__(self, source: str, problems: Sequence[Problem]):
        self.source = source
        self.problems = list(problems)
        lines = [f"invalid job {source} ({len(self.problems)} problem(s)):"]
        lines += ["  " + p.render(source) for p in self.problems]
        super().__init__("\n".join(lines))
