"""resources.max_failures → torchrun's --max_restarts: -1 (unlimited) must not reach torchrun,
which refuses a negative count (torch 2.13) or reads it as no restarts (older torch)."""

from __future__ import annotations

import inspect
import shlex
from pathlib import Path

import pytest

from phmscale.launch.torchx import UNLIMITED_RESTARTS, app_for
from phmscale.spec import load_job

ROOT = Path(__file__).resolve().parents[2]
JOB = "jobs/quickstart.yaml"


def _app(sets: list[str]):
    spec = load_job(ROOT / JOB, sets)
    # app_for took (spec, job_path, sets, scheduler) and may now take (spec, scheduler) with
    # the job shipped inside the command: this test is about --max_restarts only.
    if "job_path" in inspect.signature(app_for).parameters:
        return app_for(spec, JOB, sets, "local_cwd")
    return app_for(spec, "local_cwd")


def _max_restarts(sets: list[str]) -> str:
    (role,) = _app(sets).roles
    args = shlex.split(role.args[1])  # the tokens of the role's `bash -c` command
    return args[args.index("--max_restarts") + 1]


def test_unlimited_failures_become_a_large_finite_restart_count():
    restarts = _max_restarts(["resources.max_failures=-1"])
    assert restarts == str(UNLIMITED_RESTARTS)
    assert int(restarts) >= 1_000_000  # effectively unlimited, and >= 0 as torchrun demands


@pytest.mark.parametrize("failures", [0, 3])
def test_finite_failures_pass_through(failures: int):
    assert _max_restarts([f"resources.max_failures={failures}"]) == str(failures)
