"""README keeps its promises: the two commands first, .ci/run runs the same test command, and
the job spec reference equals the schema."""

from __future__ import annotations

import re

from phmscale.spec.load import reference_markdown
from tests.conftest import ROOT


def _commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", text)


def test_first_two_commands_install_then_quickstart_and_tests():
    quickstart, tests = _commands()[:2]
    assert "pip install torch==2.13.0" in quickstart and "jobs/quickstart.yaml" in quickstart
    assert "--address local" in quickstart  # the embedded defaults: local Ray, MLflow on SQLite
    assert "pip install torch==2.13.0" in tests and tests.rstrip().endswith("pytest")


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    readme_test = _commands()[1].split("pip install torch==2.13.0 && ", 1)[1]
    assert readme_test in ci
    assert "pip install -q torch==2.13.0" in ci and "set -euo pipefail" in ci


def test_reference_matches_schema():
    assert reference_markdown() in (ROOT / "README.md").read_text()
