"""Which backend owns a job handle: `phmscale status/logs/stop/list` go through `backend_for`.

A Ray job id is a plain submission id (`quickstart-20250101-120000-ab12`), served by
`ray_jobs.RayJobs`; a TorchX handle looks like `scheduler://session/app_id` and is served by
`torchx_jobs.TorchXJobs`. The dispatch is explicit here; neither backend registers itself.
"""

from __future__ import annotations

from phmscale.launch.errors import UnknownJob
from phmscale.launch.record import JobBackend


def is_handle(job_id: str) -> bool:
    """A `scheme://…` handle (TorchX style), not a plain Ray submission id."""
    scheme, sep, _ = job_id.partition("://")
    return bool(sep) and scheme not in ("http", "https")


def backend_for(job_id: str, address: str | None) -> JobBackend:
    """The backend that owns `job_id`; Ray (at `address` / $RAY_ADDRESS) for plain ids."""
    if is_handle(job_id):
        from phmscale.launch.torchx import SUPPORTED_SCHEDULERS, TORCHX_SCHEDULERS

        scheme = job_id.split("://", 1)[0]
        if scheme not in TORCHX_SCHEDULERS:
            raise UnknownJob(
                f"{job_id!r} looks like a TorchX handle (scheduler://session/app_id), but "
                f"{scheme!r} is not a TorchX scheduler; phmscale runs TorchX on: "
                f"{', '.join(SUPPORTED_SCHEDULERS)}")
        from phmscale.launch.torchx_jobs import backend_for as torchx_backend

        return torchx_backend(job_id)
    return backend_named(None, address)


def backend_named(scheduler: str | None, address: str | None) -> JobBackend:
    """`list`'s backend: a TorchX scheduler (`torchx:slurm`), else the Ray cluster at
    `address` / $RAY_ADDRESS."""
    if scheduler is not None:
        from phmscale.launch.torchx_jobs import backend_for as torchx_backend

        return torchx_backend(scheduler)
    from phmscale.launch.ray_jobs import RayJobs

    return RayJobs.connect(address)
