"""The CLI as a whole: every verb answers --help, the app loads without Ray, DeepSpeed or
MLflow (they load when a verb needs them), and a user's error is a message with exit 2, never
a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from phmscale.cli.main import app
from tests.conftest import ROOT, run_cli


def _verbs() -> list[list[str]]:
    root = get_command(app)
    out = []
    for name, command in root.commands.items():  # type: ignore[attr-defined]
        subs = getattr(command, "commands", None)
        out += [[name, sub] for sub in subs] if subs else [[name]]
    return sorted(out)


def test_the_verbs_are_all_there():
    verbs = {" ".join(v) for v in _verbs()}
    assert {"run", "submit", "sweep", "status", "logs", "stop", "list", "compare", "export",
            "eval", "generate", "validate", "bench generate", "bench paper"} <= verbs


@pytest.mark.parametrize("verb", _verbs(), ids=" ".join)
def test_every_verb_answers_help(verb):
    result = CliRunner().invoke(app, [*verb, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_the_app_loads_without_the_heavy_libraries():
    code = ("import sys, phmscale.cli.main; "
            "print(sorted(m for m in ('ray', 'deepspeed', 'mlflow', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_user_errors_exit_2_without_a_traceback(tmp_path):
    bad = tmp_path / "job.yaml"
    bad.write_text("name: x\nmodel: {dim: 30, heads: 4}\ndata: {train: 'builtin:digits'}\n")
    for args in (["validate", str(bad)], ["run", str(bad)], ["sweep", str(bad), "--dry-run"],
                 ["submit", str(tmp_path / "missing.yaml")]):
        result = run_cli(*args, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr and "error:" in result.stderr, result.stderr
