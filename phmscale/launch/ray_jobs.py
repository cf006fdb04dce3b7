"""The Ray Jobs API behind `phmscale submit/status/logs/stop/list`.

Talks to the cluster's dashboard over HTTP (`ray.job_submission.JobSubmissionClient`), with the
token header when the cluster asks for one (see `auth`). Every failure a user can cause (no
cluster there, a missing or wrong token, an unknown job id) becomes a `PhmscaleError` with a
message saying what to do; nothing here prints a traceback for those.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from phmscale.launch import auth
from phmscale.launch.errors import (
    ClusterAuthError,
    ClusterUnreachable,
    NoClusterAddress,
    UnknownJob,
)
from phmscale.launch.mlflow_link import attach_runs
from phmscale.launch.package import Submission
from phmscale.launch.record import JobRecord

# Ray's client lets these override the address it is given; ours must win.
_ADDRESS_ENVS = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
FOLLOW_POLL_S = 1.0


def resolve_address(address: str | None) -> str:
    """--address, else $RAY_API_SERVER_ADDRESS / $RAY_ADDRESS → the dashboard's HTTP URL."""
    value = address or next((os.environ[e] for e in _ADDRESS_ENVS if os.environ.get(e)), None)
    if not value:
        raise NoClusterAddress(
            "no Ray cluster given: pass --address http://HEAD:8265 (the dashboard URL), set "
            "$RAY_ADDRESS, or use `phmscale submit JOB.yaml --address local` to run on a "
            "cluster started here")
    if value == "local":
        raise NoClusterAddress("--address local only works with `phmscale submit` (the "
                               "cluster lives as long as that command)")
    if value.startswith("ray://"):
        raise NoClusterAddress(
            f"{value} is a Ray Client address; phmscale uses the Jobs API: pass the "
            "dashboard URL, e.g. http://HEAD:8265")
    if "://" not in value:
        value = "http://" + value
    return value.rstrip("/")


@contextlib.contextmanager
def _address_env_cleared() -> Iterator[None]:
    saved = {e: os.environ.pop(e) for e in _ADDRESS_ENVS if e in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


# Ray 2.60's JobSubmissionClient turns every non-200 reply into
# RuntimeError(f"Request failed with status code {status}: {body}.") (dashboard_sdk._raise_error);
# for an unknown id the dashboard answers 404 "Job <id> does not exist". Only that leading status
# counts: job ids hold dates (`quickstart-20250404-…`) and a 500's traceback body can say "does
# not exist" about anything, so searching the whole text would call a running job unknown.
_NOT_FOUND = re.compile(r"Request failed with status code 404\b")


def _is_not_found(error: Exception) -> bool:
    return _NOT_FOUND.match(str(error)) is not None


class _Follower:
    """The log text written so far, fed by the websocket stream and by full fetches."""

    def __init__(self, write: Callable[[str], None]):
        self.write = write
        self.written = 0  # characters of the log written so far (the stream is a prefix)
        self.lock = threading.Lock()
        self.closed = False
        self.failed = False
        self.ended = threading.Event()

    def _emit(self, chunk: str) -> None:
        with self.lock:
            if not self.closed:
                self.write(chunk)
                self.written += len(chunk)

    def stream(self, client: Any, job_id: str) -> None:
        async def pump() -> None:
            async for chunk in client.tail_job_logs(job_id):
                self._emit(chunk)

        try:
            asyncio.run(pump())
        except Exception:  # noqa: BLE001 - fall back to polling
            self.failed = True
        finally:
            self.ended.set()

    def catch_up(self, full: str, final: bool = False) -> None:
        with self.lock:
            if len(full) > self.written:
                self.write(full[self.written:])
                self.written = len(full)
            self.closed = self.closed or final


class RayJobs:
    """A Ray cluster's Jobs API, as a `JobBackend`."""

    name = "ray"

    def __init__(self, client: Any, url: str):
        self.client = client
        self.url = url

    @classmethod
    def connect(cls, address: str | None) -> RayJobs:
        url = resolve_address(address)
        headers = auth.auth_headers(url)  # probes the cluster: unreachable / token missing
        with _address_env_cleared(), cls._errors(url):
            from ray.job_submission import JobSubmissionClient

            client = JobSubmissionClient(url, headers=headers)
        return cls(client, url)

    # -- error mapping ---------------------------------------------------------------------
    @staticmethod
    @contextlib.contextmanager
    def _errors(url: str, job_id: str | None = None) -> Iterator[None]:
        import requests
        from ray.exceptions import AuthenticationError

        try:
            yield
        except AuthenticationError:
            raise ClusterAuthError(auth.rejected_message(url)) from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                ConnectionError) as error:
            raise ClusterUnreachable(auth.unreachable_message(url, error)) from None
        except RuntimeError as error:
            if job_id is not None and _is_not_found(error):
                raise UnknownJob(
                    f"no job {job_id!r} on the Ray cluster at {url}: `phmscale list --address "
                    f"{url}` shows the jobs it knows") from None
            raise

    # -- submit ----------------------------------------------------------------------------
    def submit(self, submission: Submission, retry_s: float = 60.0) -> str:
        """Submit; retries while a just-started cluster's job agent is not up yet."""
        deadline = time.monotonic() + retry_s
        while True:
            try:
                with self._errors(self.url):
                    return self.client.submit_job(
                        entrypoint=submission.entrypoint,
                        submission_id=submission.submission_id,
                        runtime_env=submission.runtime_env,
                        metadata=submission.metadata,
                    )
            except RuntimeError as error:
                if "No available agent" in str(error) and time.monotonic() < deadline:
                    time.sleep(0.5)
                    continue
                raise

    # -- JobBackend ------------------------------------------------------------------------
    def _record(self, details: Any) -> JobRecord:
        metadata = dict(details.metadata or {})
        return JobRecord(
            job_id=details.submission_id or details.job_id or "",
            status=str(details.status),
            name=metadata.get("phmscale.job", ""),
            start_time=details.start_time / 1000 if details.start_time else None,
            end_time=details.end_time / 1000 if details.end_time else None,
            message=details.message or "",
            entrypoint=details.entrypoint or "",
            metadata=metadata,
            backend=self.name,
            dashboard_url=f"{self.url}/#/jobs/{details.submission_id or details.job_id}",
            native_id=details.job_id,
        )

    def status(self, job_id: str, mlflow: bool = True) -> JobRecord:
        with self._errors(self.url, job_id):
            record = self._record(self.client.get_job_info(job_id))
        if mlflow:
            attach_runs([record])
        return record

    def logs(self, job_id: str) -> str:
        with self._errors(self.url, job_id):
            return self.client.get_job_logs(job_id)

    def follow(self, job_id: str, write: Callable[[str], None],
               poll_s: float = FOLLOW_POLL_S) -> JobRecord:
        """Write the logs as they come until the job ends, then the rest.

        Lines stream over the dashboard's websocket (`tail_job_logs`) while the status is
        polled. A stream can end before the driver's last lines reach it, so once the job is
        over the whole log is fetched once and everything past what was written is written.
        If the stream breaks (a proxy without websockets), the logs are polled instead.
        """
        self.status(job_id, mlflow=False)  # an unknown id fails here, clearly
        follower = _Follower(write)
        thread = threading.Thread(target=follower.stream, args=(self.client, job_id),
                                  daemon=True, name="phmscale-log-stream")
        thread.start()
        while True:
            record = self.status(job_id, mlflow=False)
            if record.terminal:
                break
            if follower.failed:  # no websocket: poll the whole log instead
                follower.catch_up(self.logs(job_id))
            time.sleep(poll_s)
        follower.ended.wait(timeout=5.0)  # the server closes the stream once the job has ended
        follower.catch_up(self.logs(job_id), final=True)
        attach_runs([record])
        return record

    def wait(self, job_id: str, timeout_s: float | None = None,
             poll_s: float = FOLLOW_POLL_S) -> JobRecord:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            record = self.status(job_id, mlflow=False)
            if record.terminal or (deadline is not None and time.monotonic() > deadline):
                attach_runs([record])
                return record
            time.sleep(poll_s)

    def stop(self, job_id: str, wait_s: float | None = None) -> JobRecord:
        """Ask the job to stop and wait until it has: SIGTERM to the driver, whose workers
        then checkpoint at their current step, and SIGKILL after the job's grace period
        (`resources.stop_grace_s`, in its metadata; 3 s, Ray's default, for other jobs)."""
        record = self.status(job_id, mlflow=False)
        if wait_s is None:
            wait_s = float(record.metadata.get("phmscale.stop_grace_s", 3)) + 30.0
        with self._errors(self.url, job_id):
            self.client.stop_job(job_id)
        return self.wait(job_id, timeout_s=wait_s, poll_s=0.5)

    def list(self, everything: bool = False, mlflow: bool = True) -> list[JobRecord]:
        """Submitted jobs, oldest first; only phmscale's unless `everything`."""
        with self._errors(self.url):
            details = self.client.list_jobs()
        records = [self._record(d) for d in details
                   if str(getattr(d, "type", "SUBMISSION")).upper().endswith("SUBMISSION")]
        if not everything:
            records = [r for r in records if r.name]
        records.sort(key=lambda r: r.start_time or 0.0)
        if mlflow:
            attach_runs(records)
        return records
