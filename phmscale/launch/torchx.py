"""TorchX launcher: a job spec → a TorchX AppDef that runs the engine's loop under torchrun.

Two doors, one AppDef builder (`torchx_app.build_app`):
- the TorchX component `train` below (`torchx run -s local_cwd phmscale/launch/torchx.py:train
  --job jobs/quickstart.yaml --nproc_per_node 2`), and
- the library the CLI wires to `phmscale submit JOB --scheduler torchx:<name>` and to
  status/logs/stop/list on handles `scheduler://session/app_id`: `app_for`, `submit`,
  `status`, `wait`, `logs`, `stop`, `list_jobs`, `is_torchx_handle`, all importable from here.

The pieces, one module each, read in this order:
- `torchx_runner`: the optional torchx import, one runner per process, error translation;
- `torchx_args`: supported schedulers, `--scheduler-arg` parsing and validation;
- `torchx_app`: the AppDef (torchrun command, resources, the rank layout per scheduler);
- `torchx_jobs`: submit, and status/wait/logs/stop/list on handles;
- `torchx_backend`: the `JobBackend` that `phmscale status/logs/stop` dispatch to;
- `torchx_entry`: what each rank runs under torchrun.

Importing this module registers `TorchXJobs` in `phmscale.launch.backend.SCHEMES`, so
`phmscale status/logs/stop` route TorchX handles here.

TorchX 0.7.0 is its newest release and its Ray scheduler is gone upstream: Ray jobs go through
phmscale's own Ray launcher (`phmscale submit --address …`), never through TorchX.

No `from __future__ import annotations` here: TorchX reads the component's annotations at run
time and its linter accepts only `typing` spellings (Optional, List, Dict).
"""

from typing import Dict, List, Optional  # noqa: UP035 (TorchX's component linter)

from phmscale.launch.torchx_app import (
    ENTRY_MODULE,
    IMAGES,
    RDZV_PORT,
    ROLE,
    app_for,
    build_app,
)
from phmscale.launch.torchx_args import (
    MEM_MB_PER_RANK,
    PHMSCALE_OPTS,
    SHARED_FS,
    SINGLE_NODE,
    SUPPORTED_SCHEDULERS,
    TORCHX_SCHEDULERS,
    local_log_root,
    parse_scheduler,
    parse_scheduler_args,
    valid_keys,
)
from phmscale.launch.torchx_backend import RECORD_STATUS, TorchXJobs, backend_for
from phmscale.launch.torchx_jobs import (
    is_torchx_handle,
    list_jobs,
    logs,
    status,
    stop,
    submit,
    wait,
)
from phmscale.launch.torchx_runner import AppDef
from phmscale.launch.torchx_runner import runner as _runner  # the tests' name for it
from phmscale.spec import load_job

__all__ = [
    "ENTRY_MODULE", "IMAGES", "MEM_MB_PER_RANK", "PHMSCALE_OPTS", "RDZV_PORT", "RECORD_STATUS",
    "ROLE", "SHARED_FS", "SINGLE_NODE", "SUPPORTED_SCHEDULERS", "TORCHX_SCHEDULERS",
    "TorchXJobs", "_runner", "app_for", "backend_for", "is_torchx_handle", "list_jobs",
    "local_log_root", "logs", "parse_scheduler", "parse_scheduler_args", "status", "stop",
    "submit", "train", "valid_keys", "wait",
]


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
