"""TorchX, part 1 of 3: the component and the AppDef — a job spec → the TorchX AppDef that runs
the engine's loop under torchrun.

Two doors, one AppDef builder (`build_app`): the TorchX component `train` at the end (`torchx
run -s local_cwd phmscale/launch/torchx.py:train --job jobs/quickstart.yaml --nproc_per_node
2`), and `app_for`, which `phmscale submit JOB --scheduler torchx:<name>` uses through
`torchx_jobs` (part 2: submit, status, logs, stop, list on handles `scheduler://session/app_id`).
Part 3, `torchx_entry`, is what each rank runs under torchrun.

Each node (a TorchX replica) runs `python -m torch.distributed.run … -m
phmscale.launch.torchx_entry --spec B64`; torchrun exports RANK/WORLD_SIZE/LOCAL_RANK/
MASTER_ADDR/MASTER_PORT, which is all `phmscale.train.job.run_job` reads.

The job travels inside the command, resolved as for Ray (`package.resolve_for_cluster`): every
rank runs the job the user validated, not a file it would re-read (on kubernetes and docker the
image's copy). Base64 keeps it clear of bash quoting and TorchX's `$` macros. Its secrets stay
`${VAR}` references, their values in the role's environment (which the scheduler's job
description shows: a Kubernetes pod spec, `sbatch` arguments).

Layout of `resources.workers` ranks (override with `--scheduler-arg nproc_per_node=K`):
- local_cwd, local_docker: one node (process tree / container) running `workers` ranks;
- kubernetes, slurm: `workers` nodes (pods / Slurm tasks) × 1 rank each, each node asking for
  `cpus_per_worker` CPUs and `gpus_per_worker` GPUs. With nproc_per_node=K: workers/K nodes.

TorchX 0.7.0 is its newest release and its Ray scheduler is gone upstream: Ray jobs go through
phmscale's own Ray launcher (`phmscale submit --address …`), never through TorchX. torchx is the
optional `phmscale[torchx]` extra: without it this module still imports and `require_torchx`
says what to install.

No `from __future__ import annotations` here: TorchX reads the component's annotations at run
time and its linter accepts only `typing` spellings (Optional, List, Dict).
"""

import base64
import difflib
import json
import math
import os
import shlex
import sys
from pathlib import Path
from typing import Dict, List, Optional  # noqa: UP035 (TorchX's component linter)

from phmscale.errors import InvalidInputError, PhmscaleError
from phmscale.spec import JobSpec, load_job

try:  # torchx is the optional `phmscale[torchx]` extra; handles are recognised without it
    from torchx import specs
    from torchx.specs import AppDef
except ImportError:  # pragma: no cover - exercised only where torchx is absent
    specs = None

    class AppDef:  # type: ignore[no-redef]  # placeholder so the module still imports
        pass


def require_torchx() -> None:
    if specs is None:
        raise PhmscaleError("TorchX is not installed: pip install 'phmscale[torchx]'")


SUPPORTED_SCHEDULERS = ("local_cwd", "local_docker", "kubernetes", "slurm")
# Every scheduler TorchX 0.7.0 names: a handle with one of these schemes is a TorchX handle.
TORCHX_SCHEDULERS = SUPPORTED_SCHEDULERS + (
    "kubernetes_mcad", "aws_batch", "aws_sagemaker", "gcp_batch", "ray", "lsf", "local")
SINGLE_NODE = ("local_cwd", "local_docker")  # all ranks on one node by default
SHARED_FS = ("local_cwd", "slurm")  # the submitter's working directory is the workers'
MEM_MB_PER_RANK = 4096  # a digits/mnist1d job peaks well under 2 GiB per rank on CPU
ROLE = "trainer"
ENTRY_MODULE = "phmscale.launch.torchx_entry"
IMAGES = {"cpu": "ghcr.io/phmscale/phmscale:cpu", "cuda": "ghcr.io/phmscale/phmscale:cuda"}
RDZV_PORT = 29500
# What `resources.max_failures: -1` ("unlimited") becomes for torchrun, which has no unlimited:
# torch 2.13's torchrun refuses `--max_restarts -1` at start ("max_restarts must be >= 0") and
# older ones treat it as no restarts (the agent restarts while remaining > 0). Python's int is
# unbounded; 2**31 - 1 also fits anything that stores the count as a C int.
UNLIMITED_RESTARTS = 2**31 - 1
CONTAINER_WORKDIR = "/app"  # the images' WORKDIR: relative job paths name files there


def parse_scheduler(name: str) -> str:
    """`torchx:slurm` or `slurm` → `slurm`; anything TorchX cannot run for us is an error."""
    sched = name.removeprefix("torchx:")
    if sched == "ray":
        raise InvalidInputError(
            "--scheduler torchx:ray is not supported: TorchX 0.7.0 is its newest release and "
            "upstream removed its Ray scheduler. Submit to Ray through phmscale's own Ray "
            "launcher instead: phmscale submit JOB.yaml --address http://HEAD:8265 (or "
            "RAY_ADDRESS). TorchX schedulers: " + ", ".join(f"torchx:{s}" for s in SUPPORTED_SCHEDULERS))
    if sched not in SUPPORTED_SCHEDULERS:
        hint = difflib.get_close_matches(sched, SUPPORTED_SCHEDULERS, n=1)
        raise InvalidInputError(
            f"unknown scheduler {name!r}" + (f"; did you mean torchx:{hint[0]}?" if hint else "")
            + "; supported: " + ", ".join(f"torchx:{s}" for s in SUPPORTED_SCHEDULERS))
    return sched


def encode_spec(spec: JobSpec, cwd: Path | None) -> tuple[str, dict[str, str]]:
    """(the job as one base64 argument, the environment its ranks need). With `cwd`, resolved
    as `submit` resolves it for Ray (relative paths against `cwd`, the tracking store fixed);
    without, as written: the ranks read relative paths, and $MLFLOW_TRACKING_URI, where they
    run (the TorchX component, which cannot know its scheduler)."""
    from phmscale.launch.package import check_shipped, resolve_for_cluster
    from phmscale.tracking.uri import split_credentials

    if cwd is not None:
        resolved, env = resolve_for_cluster(spec, cwd)
        shipped = resolved.portable_dump()
    else:
        shipped, env = spec.portable_dump(), spec.secret_env
        if shipped["tracking"]["uri"]:
            shipped["tracking"]["uri"] = split_credentials(shipped["tracking"]["uri"])[0]
            env.update(split_credentials(spec.tracking.uri or "")[1])
    text = json.dumps(shipped, separators=(",", ":"))
    check_shipped(text, env)
    return base64.b64encode(text.encode()).decode(), env


def decode_spec(text: str) -> dict:
    return json.loads(base64.b64decode(text.encode()))


def build_app(spec: JobSpec, nnodes: int, nproc_per_node: int, *, cwd: Path | None = None,
              image: str | None = None, cpu: int | None = None, gpu: int | None = None,
              mem_mb: int | None = None, h: str | None = None,
              env: dict[str, str] | None = None, max_retries: int = 0,
              rdzv_port: int = RDZV_PORT, python: str = "python",
              mounts: list[str] | None = None, forward_secrets: bool = True) -> AppDef:
    """The one AppDef builder behind the TorchX component and `app_for`."""
    require_torchx()
    if nnodes < 1 or nproc_per_node < 1:
        raise InvalidInputError(f"nnodes={nnodes} and nproc_per_node={nproc_per_node} must be >= 1")
    macros = specs.macros
    res = spec.resources
    if nnodes == 1:  # one torchrun agent: port 0 lets c10d pick a free port
        endpoint = "localhost:0"
    else:  # the first node's host, which each scheduler exports under macros.rank0_env
        endpoint = f"$${{{macros.rank0_env}:=localhost}}:{rdzv_port}"
    restarts = UNLIMITED_RESTARTS if res.max_failures < 0 else res.max_failures  # -1: unlimited
    cmd = [python, "-m", "torch.distributed.run", "--rdzv_backend", "c10d",
           "--rdzv_endpoint", endpoint, "--rdzv_id", shlex.quote(macros.app_id),
           "--nnodes", str(nnodes), "--nproc_per_node", str(nproc_per_node),
           # resources.max_failures: torchrun restarts the ranks in place, and the loop
           # resumes from the newest checkpoint into the same MLflow run.
           "--max_restarts", str(restarts), "--tee", "3",
           "-m", ENTRY_MODULE]
    encoded, secret_env = encode_spec(spec, cwd)
    cmd += ["--spec", encoded]  # base64: nothing for bash or TorchX's macros to touch
    role_env = {
        "LOGLEVEL": os.environ.get("LOGLEVEL", "WARNING"),
        "PYTHONUNBUFFERED": "1",
        # torchrun would force 1 thread per rank; the spec reserves cpus_per_worker each.
        "OMP_NUM_THREADS": str(max(1, int(res.cpus_per_worker))),
    }
    if forward_secrets:
        role_env.update(secret_env)
    role_env.update(env or {})
    gpus = res.gpus_per_worker > 0
    return specs.AppDef(
        name=spec.name,
        roles=[specs.Role(
            name=ROLE,
            image=image or IMAGES["cuda" if gpus else "cpu"],
            entrypoint="bash",
            args=["-c", " ".join(cmd)],
            num_replicas=nnodes,
            resource=specs.resource(
                cpu=cpu or max(1, math.ceil(res.cpus_per_worker * nproc_per_node)),
                gpu=gpu if gpu is not None else math.ceil(res.gpus_per_worker * nproc_per_node),
                memMB=mem_mb or MEM_MB_PER_RANK * nproc_per_node, h=h),
            env=role_env,
            port_map={"c10d": rdzv_port},
            max_retries=max_retries,
            mounts=specs.parse_mounts(mounts) if mounts else [],
        )],
    )


def app_for(spec: JobSpec, scheduler: str = "local_cwd", *,
            image: str | None = None, nproc_per_node: int | None = None,
            mem_mb: int | None = None, max_retries: int = 0,
            mount: list[str] | None = None, forward_secrets: bool = True) -> AppDef:
    """The AppDef for a validated spec on `scheduler` (see the module docstring for the layout).

    local_cwd and slurm run in the submitter's working directory (shared), so the interpreter
    is this one; container schedulers use the image's `python`."""
    sched = parse_scheduler(scheduler)
    workers = spec.resources.workers
    nproc = nproc_per_node if nproc_per_node is not None else (
        workers if sched in SINGLE_NODE else 1)
    if nproc < 1 or workers % nproc:
        raise InvalidInputError(
            f"resources.workers={workers} does not divide by nproc_per_node={nproc}: choose a "
            f"divisor of {workers} or change resources.workers")
    shared = sched in SHARED_FS
    # Relative paths name files in this directory where the ranks share it, else in the
    # image's WORKDIR.
    cwd = Path.cwd() if shared else Path(CONTAINER_WORKDIR)
    return build_app(spec, workers // nproc, nproc, cwd=cwd, image=image,
                     mem_mb=mem_mb, max_retries=max_retries, mounts=mount,
                     python=sys.executable if shared else "python",
                     forward_secrets=forward_secrets)


# -- the component -------------------------------------------------------------------------


def train(
    job: str,
    nnodes: int = 1,
    nproc_per_node: int = 1,
    image: Optional[str] = None,  # noqa: UP045
    sets: Optional[List[str]] = None,  # noqa: UP006, UP045
    cpu: Optional[int] = None,  # noqa: UP045
    gpu: Optional[int] = None,  # noqa: UP045
    memMB: Optional[int] = None,  # noqa: UP045
    h: Optional[str] = None,  # noqa: UP045
    env: Optional[Dict[str, str]] = None,  # noqa: UP006, UP045
    max_retries: int = 0,
    rdzv_port: int = RDZV_PORT,
    python: str = "python",
    mounts: Optional[List[str]] = None,  # noqa: UP006, UP045
) -> AppDef:
    """
    Trains a phmscale job spec with torchrun: nnodes × nproc_per_node ranks, each running the
    engine's training loop (DeepSpeed; gloo on CPU, nccl on GPU) and logging to MLflow from
    rank 0. The job file is loaded and validated here, and travels resolved inside the
    command: the ranks never re-read it (data paths still name files where they run: the
    working directory for local_cwd and slurm, the image's WORKDIR /app or a mount for
    local_docker and kubernetes).

    Usage: torchx run -s local_cwd phmscale/launch/torchx.py:train --job jobs/quickstart.yaml --nproc_per_node 2

    Args:
        job: job spec YAML file (e.g. jobs/quickstart.yaml)
        nnodes: number of nodes (TorchX replicas)
        nproc_per_node: ranks per node; the job runs with resources.workers = nnodes × nproc_per_node
        image: container image (default ghcr.io/phmscale/phmscale:cpu, or :cuda when the job asks for GPUs)
        sets: job overrides key.path=value, comma-separated (values with commas: use phmscale submit)
        cpu: CPUs per node (default: resources.cpus_per_worker × nproc_per_node)
        gpu: GPUs per node (default: resources.gpus_per_worker × nproc_per_node)
        memMB: memory per node in MB (default 4096 × nproc_per_node)
        h: a registered TorchX named resource; takes precedence over cpu, gpu and memMB
        env: extra environment variables for the workers (e.g. MLFLOW_TRACKING_URI=http://…)
        max_retries: scheduler-level retries of the whole app
        rdzv_port: port of the c10d rendezvous on the first node (multi-node only)
        python: the Python interpreter on the nodes
        mounts: mounts for container schedulers (type=bind,src=/host,dst=/job[,readonly])
    """
    sets = list(sets or [])
    spec = load_job(job, sets)
    if spec.resources.workers != nnodes * nproc_per_node:  # the spec says what really runs
        sets.append(f"resources.workers={nnodes * nproc_per_node}")
        spec = load_job(job, sets)
    return build_app(spec, nnodes, nproc_per_node, image=image, cpu=cpu,
                     gpu=gpu, mem_mb=memMB, h=h, env=env, max_retries=max_retries,
                     rdzv_port=rdzv_port, python=python, mounts=mounts)
