"""`phmscale submit --scheduler torchx:…` through the real CLI (dry runs: no scheduler here)."""

from __future__ import annotations

from tests.conftest import run_cli


def test_slurm_dryrun_prints_the_sbatch_request():
    result = run_cli("submit", "jobs/quickstart.yaml", "--scheduler", "torchx:slurm", "--dryrun",
                     "--set", "resources.workers=2")
    assert result.returncode == 0, result.stderr
    assert "#SBATCH" in result.stdout and "torch.distributed.run" in result.stdout
    assert "phmscale.launch.torchx_entry" in result.stdout


def test_torchx_ray_and_stray_scheduler_args_rejected():
    ray = run_cli("submit", "jobs/quickstart.yaml", "--scheduler", "torchx:ray")
    assert ray.returncode == 2 and "removed its Ray scheduler" in ray.stderr
    stray = run_cli("submit", "jobs/quickstart.yaml", "--scheduler-arg", "queue=x")
    assert stray.returncode == 2 and "--scheduler torchx" in stray.stderr
    unknown = run_cli("submit", "jobs/quickstart.yaml", "--scheduler", "torchx:slurm",
                      "--dryrun", "--scheduler-arg", "partitoin=gpu")
    assert unknown.returncode == 2 and "partition" in unknown.stderr
    assert "Traceback" not in ray.stderr + stray.stderr + unknown.stderr
