"""The job backend `phmscale status/logs/stop/list` dispatch to for TorchX handles.

Importing this module (which `phmscale.launch.torchx` does) registers every TorchX scheduler
name in `phmscale.launch.backend.SCHEMES`, so `phmscale status/logs/stop` route TorchX
handles here; unsupported ones (ray://, …) get `backend_for`'s explanation.
"""

import re
from typing import Any

from phmscale.launch import torchx_jobs as jobs
from phmscale.launch.torchx_args import TORCHX_SCHEDULERS, parse_scheduler

# TorchX's states in the words JobRecord uses (Ray's); UNKNOWN stays UNKNOWN (not terminal).
RECORD_STATUS = {"UNSUBMITTED": "PENDING", "SUBMITTED": "PENDING", "PENDING": "PENDING",
                 "RUNNING": "RUNNING", "SUCCEEDED": "SUCCEEDED", "FAILED": "FAILED",
                 "CANCELLED": "STOPPED", "UNKNOWN": "UNKNOWN"}


class TorchXJobs:
    """`JobBackend` for TorchX handles on one scheduler."""

    def __init__(self, scheduler: str):
        self.scheduler = parse_scheduler(scheduler)
        self.name = f"torchx:{self.scheduler}"

    def _record(self, info: dict[str, Any]) -> Any:
        from phmscale.launch.backend import JobRecord

        app_id = info["app_id"].rsplit(":", 1)[-1]  # kubernetes: namespace:name
        return JobRecord(job_id=info["handle"], status=RECORD_STATUS[info["state"]],
                         name=re.sub(r"-[a-z0-9]{8,}$", "", app_id), message=info.get("msg") or "",
                         backend=self.name, dashboard_url=info.get("ui_url"))

    def status(self, job_id: str) -> Any:
        return self._record(jobs.status(job_id))

    def logs(self, job_id: str) -> str:
        return "".join(line + "\n" for line in jobs.logs(job_id))

    def follow(self, job_id: str, write: Any) -> Any:
        for line in jobs.logs(job_id, follow=True):
            write(line + "\n")
        return self._record(jobs.wait(job_id))

    def stop(self, job_id: str) -> Any:
        jobs.stop(job_id)
        return self._record(jobs.status(job_id))

    def list(self) -> list[Any]:
        return [self._record({**job, "msg": ""}) for job in jobs.list_jobs(self.scheduler)]


def backend_for(handle_or_scheduler: str) -> TorchXJobs:
    """The backend for a handle (`slurm://torchx/123`) or a scheduler (`torchx:slurm`)."""
    if "://" in handle_or_scheduler:
        return TorchXJobs(jobs.parse_handle(handle_or_scheduler)[0])
    return TorchXJobs(handle_or_scheduler)


def _register() -> None:
    try:
        from phmscale.launch.backend import SCHEMES
    except ImportError:  # pragma: no cover - the Ray launcher's dispatch is not there
        return
    for scheme in TORCHX_SCHEDULERS:  # unsupported ones get backend_for's explanation
        SCHEMES.setdefault(scheme, ("phmscale.launch.torchx", "backend_for"))


_register()
