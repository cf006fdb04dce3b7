"""Job handles and the backends behind them.

`phmscale status/logs/stop` take a job id and `list` takes a backend; both go through
`backend_for`. A Ray job id is a plain submission id (`quickstart-20250101-120000-ab12`); a
TorchX handle looks like `scheduler://session/app_id` and will be served by `launch/torchx.py`
(which registers itself in `SCHEMES` with a `JobBackend` of its own). Only the Ray backend
exists today.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from phmscale.launch.errors import UnknownJob

TERMINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})


@dataclass
class JobRecord:
    """One job as every backend describes it."""

    job_id: str
    status: str  # PENDING | RUNNING | SUCCEEDED | FAILED | STOPPED (Ray's words)
    name: str = ""  # the phmscale job name ("" for jobs phmscale did not submit)
    start_time: float | None = None  # seconds since the epoch
    end_time: float | None = None
    message: str = ""
    entrypoint: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    mlflow_url: str | None = None
    backend: str = "ray"
    dashboard_url: str | None = None
    native_id: str | None = None  # the backend's own id (Ray: the driver's job id, hex)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


class JobBackend(Protocol):
    """What `status/logs/stop/list` need of a backend."""

    name: str

    def status(self, job_id: str) -> JobRecord: ...

    def logs(self, job_id: str) -> str:
        """Everything the job printed so far."""
        ...

    def follow(self, job_id: str, write: Callable[[str], None]) -> JobRecord:
        """Write the logs as they come until the job ends; nothing is lost at the end."""
        ...

    def stop(self, job_id: str) -> JobRecord: ...

    def list(self) -> list[JobRecord]: ...


# handle scheme → (module, factory attribute); the factory takes the handle and returns a backend
SCHEMES: dict[str, tuple[str, str]] = {}


def is_handle(job_id: str) -> bool:
    """A `scheme://…` handle (TorchX style), not a plain Ray submission id."""
    scheme, sep, _ = job_id.partition("://")
    return bool(sep) and scheme not in ("http", "https")


def backend_for(job_id: str, address: str | None) -> JobBackend:
    """The backend that owns `job_id`; Ray (at `address` / $RAY_ADDRESS) for plain ids."""
    if is_handle(job_id):
        scheme = job_id.split("://", 1)[0]
        if scheme not in SCHEMES:
            try:  # launch/torchx.py registers its schedulers on import
                importlib.import_module("phmscale.launch.torchx")
            except ImportError:
                pass
        if scheme not in SCHEMES:
            raise UnknownJob(
                f"{job_id!r} looks like a TorchX handle (scheduler://session/app_id), but no "
                f"backend serves scheduler {scheme!r} in this installation")
        module, attr = SCHEMES[scheme]
        return getattr(importlib.import_module(module), attr)(job_id)
    from phmscale.launch.ray_jobs import RayJobs

    return RayJobs.connect(address)
