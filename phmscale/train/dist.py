"""Process-group setup from the environment a launcher provides.

torchrun, Ray Train and TorchX all export RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT. A plain `phmscale run` has none of them: world size 1, and we fill in a loopback
rendezvous so DeepSpeed (which always wants a process group) gets a one-member group.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from typing import Any

import torch

from phmscale.net import free_port


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def backend(self) -> str:
        return "nccl" if self.device.type == "cuda" else "gloo"


def pin_cpu_accelerator() -> None:
    """DeepSpeed picks its accelerator when it is first imported, and on a machine without
    CUDA it must be told CPU (else it warns and guesses): call before importing it."""
    os.environ.setdefault("DS_ACCELERATOR", "cpu")


def use_gpu(spec: Any, launcher: str) -> bool:
    """The one device rule. `phmscale run` (launcher "local") takes the GPU when there is
    one; a cluster rank only when the job reserves one (resources.gpus_per_worker), or it
    would share a device its scheduler gave to someone else."""
    if not torch.cuda.is_available():
        return False
    return launcher == "local" or spec.resources.gpus_per_worker > 0


def dist_env(use_gpu: bool | None = None) -> DistEnv:
    """Read rank/world from the environment (defaults: a single local process)."""
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_RANK", 0))
    gpu = torch.cuda.is_available() if use_gpu is None else use_gpu
    device = torch.device("cuda", local) if gpu else torch.device("cpu")
    return DistEnv(rank, world, local, device)


def init_distributed(env: DistEnv) -> None:
    """Start the process group DeepSpeed will use (idempotent)."""
    if env.device.type == "cpu":
        pin_cpu_accelerator()
    else:
        torch.cuda.set_device(env.device)
    import deepspeed
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return
    if env.world_size == 1:
        # A one-member group on a private loopback port, passed explicitly: exporting
        # MASTER_PORT would leak into every subprocess this process starts (and collide).
        os.environ.setdefault("LOCAL_RANK", "0")  # DeepSpeed's engine reads it
        dist.init_process_group(env.backend, init_method=f"tcp://127.0.0.1:{free_port()}",
                                rank=0, world_size=1)
    # DeepSpeed prints "… shm_comm_op built successfully" to stdout when it loads its CPU
    # op: to stderr with it, so `--json` output on stdout stays JSON.
    with contextlib.redirect_stdout(sys.stderr):
        deepspeed.init_distributed(dist_backend=env.backend, auto_mpi_discovery=False)


def all_reduce_mean(values: list[float], env: DistEnv) -> list[float]:
    """Mean of each value over ranks (one collective for the whole list)."""
    if env.world_size == 1:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=env.device)
    dist.all_reduce(t)
    return (t / env.world_size).tolist()


def all_reduce_sum(values: list[float], env: DistEnv) -> list[float]:
    if env.world_size == 1:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=env.device)
    dist.all_reduce(t)
    return t.tolist()


def barrier(env: DistEnv) -> None:
    if env.world_size > 1:
        import torch.distributed as dist

        dist.barrier()
