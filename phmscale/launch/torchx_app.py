"""A validated job spec → the TorchX AppDef that runs it under torchrun.

Each node (a TorchX replica) runs `python -m torch.distributed.run … -m
phmscale.launch.torchx_entry --job JOB [--set k=v]…`; torchrun exports RANK/WORLD_SIZE/
LOCAL_RANK/MASTER_ADDR/MASTER_PORT, which is all `phmscale.train.loop.train` reads.

Layout of `resources.workers` ranks (override with `--scheduler-arg nproc_per_node=K`):
- local_cwd, local_docker: one node (process tree / container) running `workers` ranks;
- kubernetes, slurm: `workers` nodes (pods / Slurm tasks) × 1 rank each, each node asking for
  `cpus_per_worker` CPUs and `gpus_per_worker` GPUs. With nproc_per_node=K: workers/K nodes.
"""

import math
import os
import shlex
import sys

from phmscale.errors import InvalidInputError
from phmscale.launch.torchx_args import MEM_MB_PER_RANK, SHARED_FS, SINGLE_NODE, parse_scheduler
from phmscale.launch.torchx_runner import AppDef, require_torchx, specs
from phmscale.spec import JobSpec

ROLE = "trainer"
ENTRY_MODULE = "phmscale.launch.torchx_entry"
IMAGES = {"cpu": "ghcr.io/phmscale/phmscale:cpu", "cuda": "ghcr.io/phmscale/phmscale:cuda"}
RDZV_PORT = 29500


def bash_arg(text: str) -> str:
    """Quote for `bash -c`, escaping `$` first: TorchX substitutes macros with
    string.Template over the whole command, which turns `$$` back into `$`."""
    return shlex.quote(text.replace("$", "$$"))


def build_app(spec: JobSpec, job: str, sets: list[str], nnodes: int, nproc_per_node: int, *,
              image: str | None = None, cpu: int | None = None, gpu: int | None = None,
              mem_mb: int | None = None, h: str | None = None,
              env: dict[str, str] | None = None, max_retries: int = 0,
              rdzv_port: int = RDZV_PORT, python: str = "python",
              mounts: list[str] | None = None) -> AppDef:
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
    cmd = [python, "-m", "torch.distributed.run", "--rdzv_backend", "c10d",
           "--rdzv_endpoint", endpoint, "--rdzv_id", shlex.quote(macros.app_id),
           "--nnodes", str(nnodes), "--nproc_per_node", str(nproc_per_node),
           # resources.max_failures: torchrun restarts the ranks in place, and the loop
           # resumes from the newest checkpoint into the same MLflow run.
           "--max_restarts", str(res.max_failures), "--tee", "3",
           "-m", ENTRY_MODULE, "--job", bash_arg(job)]
    for item in sets:
        cmd += ["--set", bash_arg(item)]
    role_env = {
        "LOGLEVEL": os.environ.get("LOGLEVEL", "WARNING"),
        "PYTHONUNBUFFERED": "1",
        # torchrun would force 1 thread per rank; the spec reserves cpus_per_worker each.
        "OMP_NUM_THREADS": str(max(1, int(res.cpus_per_worker))),
    }
    if spec.tracking.uri is None and os.environ.get("MLFLOW_TRACKING_URI"):
        role_env["MLFLOW_TRACKING_URI"] = os.environ["MLFLOW_TRACKING_URI"]
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


def app_for(spec: JobSpec, job_path: str, sets: list[str], scheduler: str = "local_cwd", *,
            image: str | None = None, nproc_per_node: int | None = None,
            mem_mb: int | None = None, max_retries: int = 0,
            mount: list[str] | None = None) -> AppDef:
    """The AppDef for a validated spec on `scheduler` (see the module docstring for the layout).

    local_cwd and slurm run in the submitter's working directory (shared), so the job path is
    made absolute and the interpreter is this one; container schedulers keep the path as given
    (it must exist in the image, WORKDIR /app, or in a mount) and use the image's `python`."""
    sched = parse_scheduler(scheduler)
    workers = spec.resources.workers
    nproc = nproc_per_node if nproc_per_node is not None else (
        workers if sched in SINGLE_NODE else 1)
    if nproc < 1 or workers % nproc:
        raise InvalidInputError(
            f"resources.workers={workers} does not divide by nproc_per_node={nproc}: choose a "
            f"divisor of {workers} or change resources.workers")
    shared = sched in SHARED_FS
    job = os.path.abspath(job_path) if shared else str(job_path)
    return build_app(spec, job, list(sets), workers // nproc, nproc, image=image,
                     mem_mb=mem_mb, max_retries=max_retries, mounts=mount,
                     python=sys.executable if shared else "python")
