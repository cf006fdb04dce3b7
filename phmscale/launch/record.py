"""`JobRecord`: one cluster job as every backend (Ray's Jobs API, TorchX) describes it, and
`JobBackend`, what `phmscale status/logs/stop/list` need of a backend (`launch.backend`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

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

    def list(self, everything: bool = False) -> list[JobRecord]:
        """The backend's jobs (`everything`: also those phmscale did not submit)."""
        ...
