"""The AppDef a spec becomes, and what TorchX would send to Kubernetes and Slurm (no cluster)."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from phmscale.errors import InvalidInputError, PhmscaleError
from phmscale.launch import torchx as tx
from phmscale.launch import torchx_jobs as txj
from phmscale.spec import load_job

ROOT = Path(__file__).resolve().parents[2]
JOB = "jobs/lm-pystdlib-phm-n4.yaml"
GPU_SETS = ["resources.workers=4", "resources.gpus_per_worker=1", "resources.cpus_per_worker=4",
            "tracking.uri=http://mlflow:5000"]


def _spec(sets):
    return load_job(ROOT / JOB, sets)


def _torchrun_args(command: str) -> list[str]:
    """The tokens of a role's `bash -c` command."""
    return shlex.split(command)


def _shipped(args: list[str]) -> dict:
    """The job a role's command carries (the ranks never re-read a job file)."""
    from phmscale.launch.torchx import decode_spec

    assert args[args.index(tx.ENTRY_MODULE) + 1] == "--spec"
    return decode_spec(args[args.index("--spec") + 1])


def test_app_layout_per_scheduler():
    spec = _spec(GPU_SETS)
    local = tx.app_for(spec, "torchx:local_cwd")
    (role,) = local.roles
    assert role.num_replicas == 1
    args = _torchrun_args(role.args[1])
    assert args[0] == sys.executable  # the submitter's interpreter: local_cwd shares the cwd
    assert args[args.index("--nproc_per_node") + 1] == "4"
    assert args[args.index("--rdzv_endpoint") + 1] == "localhost:0"
    shipped = _shipped(args)  # resolved here: paths absolute on the shared filesystem
    assert shipped["checkpoint"]["dir"] == f"{Path.cwd()}/{spec.checkpoint_dir}"
    assert shipped["resources"]["workers"] == 4 and shipped["tracking"]["uri"] == "http://mlflow:5000"
    assert (role.resource.cpu, role.resource.gpu) == (16, 4)

    remote = tx.app_for(spec, "kubernetes")
    (role,) = remote.roles
    assert role.num_replicas == 4
    assert role.image == tx.IMAGES["cuda"]
    args = _torchrun_args(role.args[1])
    assert args[0] == "python"  # the image's; relative paths name files in its WORKDIR
    assert _shipped(args)["checkpoint"]["dir"] == f"/app/{spec.checkpoint_dir}"
    assert args[args.index("--nnodes") + 1] == "4"
    assert args[args.index("--nproc_per_node") + 1] == "1"
    assert (role.resource.cpu, role.resource.gpu, role.resource.memMB) == (4, 1, 4096)

    packed = tx.app_for(spec, "slurm", nproc_per_node=2, image="x:1")
    assert packed.roles[0].num_replicas == 2
    assert packed.roles[0].resource.gpu == 2
    with pytest.raises(InvalidInputError, match="does not divide by nproc_per_node=3"):
        tx.app_for(spec, "slurm", nproc_per_node=3)


def test_cpu_job_gets_the_cpu_image_and_restarts_from_max_failures():
    spec = _spec(["resources.max_failures=3"])
    role = tx.app_for(spec, "kubernetes").roles[0]
    assert role.image == tx.IMAGES["cpu"] and role.resource.gpu == 0
    args = _torchrun_args(role.args[1])
    assert args[args.index("--max_restarts") + 1] == "3"
    assert role.env["OMP_NUM_THREADS"] == "1"


def test_set_values_survive_macro_substitution_and_bash():
    """TorchX runs string.Template over the command; `$` in a value must come out literal."""
    from torchx.specs import macros

    sets = ["tracking.experiment=price$HOME'x", "checkpoint.dir=/tmp/a b"]
    role = tx.app_for(_spec(sets), "kubernetes").roles[0]
    substituted = macros.Values(img_root="", app_id="app-1", replica_id="0",
                                rank0_env="TORCHX_RANK0_HOST").apply(role)
    command = substituted.args[1]
    assert command.startswith("python ")
    # what bash on the node hands to python: printf in python's place prints one arg per line
    out = subprocess.run(["bash", "-c", "printf '%s\\n' " + command.removeprefix("python ")],
                         capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"})
    argv = out.stdout.splitlines()
    assert argv[argv.index("--rdzv_id") + 1] == "app-1"
    assert argv[argv.index("--rdzv_endpoint") + 1] == "localhost:29500"  # unset rank-0 host
    shipped = _shipped(argv)
    assert shipped["tracking"]["experiment"] == "price$HOME'x"
    assert shipped["checkpoint"]["dir"] == "/tmp/a b"


def test_kubernetes_dryrun_request():
    pytest.importorskip("kubernetes", reason="TorchX's kubernetes scheduler needs `kubernetes`")
    sets = [*GPU_SETS, "checkpoint.dir=/mnt/checkpoints/lm"]
    spec = _spec(sets)
    info = txj.submit(spec, "torchx:kubernetes",
                     ["queue=research", "namespace=ml",
                      "mount=type=volume,src=phmscale-checkpoints,dst=/mnt/checkpoints"],
                     dryrun=True)
    resource = yaml.safe_load(str(info))
    assert resource["apiVersion"] == "batch.volcano.sh/v1alpha1" and resource["kind"] == "Job"
    assert resource["spec"]["queue"] == "research"
    tasks = resource["spec"]["tasks"]
    assert [t["name"] for t in tasks] == [f"trainer-{i}" for i in range(4)]  # one pod per rank
    for i, task in enumerate(tasks):
        (container,) = task["template"]["spec"]["containers"]
        assert container["image"] == "ghcr.io/phmscale/phmscale:cuda"
        limits = container["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == "1" and limits["cpu"] == "4000m"
        bash, flag, command = container["command"]
        assert (bash, flag) == ("bash", "-c")
        args = shlex.split(command)
        assert args[:3] == ["python", "-m", "torch.distributed.run"]
        assert args[args.index("--nnodes") + 1] == "4"
        assert args[args.index("--rdzv_id") + 1] == resource["metadata"]["name"]
        # the first pod is the rendezvous host; the others find it through Volcano's env
        host = "TORCHX_RANK0_HOST" if i == 0 else "VC_TRAINER_0_HOSTS"
        assert args[args.index("--rdzv_endpoint") + 1] == f"${{{host}:=localhost}}:29500"
        assert args[args.index("-m", 3) + 1] == "phmscale.launch.torchx_entry"
        assert _shipped(args) == _shipped(shlex.split(  # every pod runs the same job
            tasks[0]["template"]["spec"]["containers"][0]["command"][2]))
        assert _shipped(args)["checkpoint"]["dir"] == "/mnt/checkpoints/lm"
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName")
                  for v in task["template"]["spec"]["volumes"]}
        assert {claims[n]: p for n, p in mounts.items()}["phmscale-checkpoints"] == "/mnt/checkpoints"
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["TORCHX_JOB_ID"] == f"kubernetes://torchx/{resource['metadata']['name']}"
        assert "RAY_AUTH_TOKEN" not in env


def test_submit_catches_storage_that_would_fail_or_vanish():
    pytest.importorskip("kubernetes")
    args = ["queue=q", "mount=type=volume,src=c,dst=/mnt/c"]
    cases = [
        (["checkpoint.dir=s3://b/ck"], "torchx:slurm", [], "object-store URLs go through"),
        (["tracking.uri=sqlite:///mlflow.db", "checkpoint.dir=/mnt/c/x"], "torchx:kubernetes",
         args, "would live and die inside a pod"),
        (["tracking.uri=http://mlflow:5000"], "torchx:kubernetes", args[:1],
         "each pod would keep only its own shards"),
        (["tracking.uri=http://127.0.0.1:9"], "torchx:local_cwd", [], "is unreachable"),
    ]
    for sets, scheduler, scheduler_args, message in cases:
        sets = ["resources.workers=2", *sets]
        with pytest.raises(PhmscaleError, match=message):
            txj.submit(_spec(sets), scheduler, scheduler_args)


def test_slurm_dryrun_request():
    spec = _spec(GPU_SETS)
    info = txj.submit(spec, "torchx:slurm", ["partition=gpu", "time=01:30:00"], dryrun=True)
    script = info.request.materialize()
    assert script.count("#SBATCH --job-name=trainer-") == 4  # one het-job component per node
    assert script.count("#SBATCH hetjob") == 3
    for flag in ("--partition=gpu", "--time=01:30:00", "--gpus-per-task=1", "--cpus-per-task=4",
                 "--ntasks-per-node=1"):
        assert script.count(flag) == 4, flag
    assert f"{sys.executable} -m torch.distributed.run" in script  # the venv on the shared FS
    assert "--nnodes 4 --nproc_per_node 1" in script
    assert "-m phmscale.launch.torchx_entry --spec " in script
    assert "TORCHX_JOB_ID=slurm://torchx/" in script


def test_component_makes_resources_workers_match_the_ranks():
    app = tx.train(job=str(ROOT / "jobs/quickstart.yaml"), nnodes=1, nproc_per_node=3)
    args = _torchrun_args(app.roles[0].args[1])
    assert _shipped(args)["resources"]["workers"] == 3
    assert args[args.index("--nproc_per_node") + 1] == "3"
    app = tx.train(job=str(ROOT / JOB), nnodes=2, sets=["train.steps=100"])
    shipped = _shipped(_torchrun_args(app.roles[0].args[1]))
    assert shipped["resources"]["workers"] == 2 and shipped["train"]["steps"] == 100


def test_the_component_loads_through_torchx_cli():
    """`torchx run` lints the component file (annotations, docstring) and builds the AppDef."""
    from torchx.specs.file_linter import validate

    assert validate(str(ROOT / "phmscale/launch/torchx.py"), "train") == []
    torchx = Path(sys.executable).with_name("torchx")
    out = subprocess.run(
        [str(torchx), "run", "--dryrun", "-s", "slurm", "-cfg", "partition=gpu,time=02:00:00",
         "phmscale/launch/torchx.py:train", "--job", JOB, "--nnodes", "2",
         "--sets", "resources.workers=2,resources.gpus_per_worker=1"],
        cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr
    assert text.count("#SBATCH --job-name=trainer-") == 2
    assert "--gpus-per-task=1" in text
    import re

    from phmscale.launch.torchx import decode_spec

    shipped = decode_spec(re.search(r"--spec ([A-Za-z0-9+/=]{20,})", text).group(1))
    assert shipped["resources"]["workers"] == 2 and shipped["resources"]["gpus_per_worker"] == 1
