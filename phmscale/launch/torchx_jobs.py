"""Submitting and managing TorchX apps: `submit`, then `status`, `wait`, `logs`, `stop` and
`list_jobs` on handles `scheduler://session/app_id`.

local_cwd ranks are children of the submitting process (TorchX keeps no record of them
elsewhere): `submit` must be followed by `wait`, and the process's exit ends them. Their logs
stay under `local_log_root()`, so status/logs/list also work from another process.
"""

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from phmscale.errors import InvalidInputError
from phmscale.launch.torchx_app import ROLE, app_for
from phmscale.launch.torchx_args import (
    SHARED_FS,
    TORCHX_SCHEDULERS,
    local_log_root,
    parse_scheduler,
    parse_scheduler_args,
)
from phmscale.launch.torchx_runner import ask, runner
from phmscale.spec import JobSpec

_HANDLE = re.compile(r"^(?P<scheduler>[a-z_]+)://(?P<session>[^/]+)/(?P<app_id>.+)$")


def submit(spec: JobSpec, scheduler: str, scheduler_args: list[str], dryrun: bool = False,
           forward_secrets: bool = True) -> Any:
    """Submit through TorchX; returns the handle `scheduler://session/app_id`, or with
    `dryrun=True` TorchX's AppDryRunInfo (str() of it is the exact scheduler request).

    local_cwd runs the ranks as children of this process: they end when it exits, so a CLI
    must `wait` (and may stream `logs(handle, follow=True)`), as `torchx run` itself does."""
    sched = parse_scheduler(scheduler)
    cfg, ours = parse_scheduler_args(sched, scheduler_args)
    app = app_for(spec, sched, forward_secrets=forward_secrets, **ours)
    _check_storage(spec, sched, app.roles[0].num_replicas, bool(ours.get("mount")), dryrun)
    run = runner()
    info = ask(sched, run.dryrun, app, sched, cfg=cfg)
    if dryrun:
        return info
    return ask(sched, run.schedule, info)


def _check_storage(spec: JobSpec, sched: str, nnodes: int, mounted: bool,
                   dryrun: bool) -> None:
    """What would only fail (or silently lose work) once the ranks run, caught here."""
    from phmscale.tracking.uri import check_reachable, resolve_uri

    if "://" in spec.checkpoint_dir:
        raise InvalidInputError(
            f"checkpoint.dir={spec.checkpoint_dir}: on the TorchX path every rank writes its "
            "checkpoint shards itself, to a local or mounted path; object-store URLs go through "
            "Ray Train (phmscale submit --address …)")
    uri = resolve_uri(spec)
    if sched in SHARED_FS:  # the workers see this machine's files and network
        from phmscale.data import check_data

        problems = check_data(spec, world_size=spec.resources.workers)
        if problems:
            raise InvalidInputError("\n".join(problems))
        if not dryrun:
            check_reachable(uri)
    elif sched == "kubernetes":
        if not uri.startswith(("http://", "https://")):
            raise InvalidInputError(
                f"torchx:kubernetes: the MLflow store {uri} would live and die inside a pod: "
                "set tracking.uri (or $MLFLOW_TRACKING_URI) to a server the pods reach, e.g. "
                "--set tracking.uri=http://mlflow.<namespace>:5000")
        if nnodes > 1 and not (spec.checkpoint_dir.startswith("/") and mounted):
            raise InvalidInputError(
                f"torchx:kubernetes with {nnodes} pods: checkpoint.dir={spec.checkpoint_dir} is "
                "not shared, so each pod would keep only its own shards. Mount a ReadWriteMany "
                "claim and write there: --scheduler-arg mount=type=volume,src=<claim>,"
                f"dst=/mnt/checkpoints --set checkpoint.dir=/mnt/checkpoints/{spec.name}")


def is_torchx_handle(job_id: str) -> bool:
    """True for `scheduler://session/app_id` with a TorchX scheduler name (no torchx import)."""
    match = _HANDLE.match(job_id)
    return bool(match) and match["scheduler"] in TORCHX_SCHEDULERS


def parse_handle(handle: str) -> tuple[str, str, str]:
    """(scheduler, session, app_id); anything else, or an unsupported scheduler, is an error."""
    match = _HANDLE.match(handle)
    if not match or match["scheduler"] not in TORCHX_SCHEDULERS:
        raise InvalidInputError(f"{handle!r} is not a TorchX handle (scheduler://session/app_id)")
    parse_scheduler(match["scheduler"])  # ray:// and the rest get their explanation
    return match["scheduler"], match["session"], match["app_id"]


def _local_dir(handle: str) -> Path:
    _, session, app_id = parse_handle(handle)
    return local_log_root() / session / app_id


def _known_here(handle: str) -> bool:
    return handle in runner()._apps  # the runner's own record of its apps


def _local_status(handle: str) -> dict[str, Any]:
    """local_cwd apps started by another process: read what TorchX left in the log dir."""
    folder = _local_dir(handle)
    if not folder.is_dir():
        raise InvalidInputError(f"no such TorchX app: {handle} (looked in {folder})")
    done = folder / "SUCCESS"  # TorchX writes it when the app ends under its runner
    if done.is_file():
        state = json.loads(done.read_text()).get("final_state", "UNKNOWN")
        msg = ""
    else:
        state = "UNKNOWN"
        msg = ("local_cwd apps live only as long as the process that submitted them; that "
               "process is still running it, or ended before the app did")
    return {"state": state, "msg": msg, "num_restarts": 0, "ui_url": f"file://{folder}"}


def status(handle: str) -> dict[str, Any]:
    """{"handle", "scheduler", "app_id", "state", "terminal", "succeeded", "num_restarts",
    "msg", "ui_url"} for a TorchX handle; an unknown app is an InvalidInputError."""
    from torchx.specs.api import AppState, is_terminal

    sched, _, app_id = parse_handle(handle)
    if sched == "local_cwd" and not _known_here(handle):
        info = _local_status(handle)
    else:
        found = ask(sched, runner().status, handle)
        if found is None:
            raise InvalidInputError(f"no such TorchX app: {handle}")
        msg = "" if found.msg in (None, "<NONE>") else found.msg  # TorchX's "no message"
        info = {"state": found.state.name, "msg": msg, "num_restarts": found.num_restarts,
                "ui_url": found.ui_url}
    state = AppState[info["state"]]
    return {"handle": handle, "scheduler": sched, "app_id": app_id, **info,
            "terminal": is_terminal(state), "succeeded": state == AppState.SUCCEEDED}


def wait(handle: str, timeout: float | None = None, poll_s: float = 1.0) -> dict[str, Any]:
    """Poll `status` until the app is terminal (or `timeout` s pass); returns the last status."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        info = status(handle)
        if info["terminal"] or (deadline is not None and time.monotonic() > deadline):
            return info
        time.sleep(poll_s)


def _replicas(handle: str) -> int:
    app = ask(parse_handle(handle)[0], runner().describe, handle)
    if app is None:
        raise InvalidInputError(f"no such TorchX app: {handle}")
    return max((r.num_replicas for r in app.roles if r.name == ROLE), default=1)


def logs(handle: str, follow: bool = False) -> Iterator[str]:
    """The app's log lines (every node, prefixed `[node k]` when there are several); with
    `follow`, keep yielding until the app ends."""
    sched, _, _ = parse_handle(handle)
    if sched == "local_cwd" and not (follow and _known_here(handle)):
        folder = _local_dir(handle) / ROLE
        if not folder.is_dir():
            raise InvalidInputError(f"no logs for {handle} (looked in {folder})")
        nodes = sorted((p for p in folder.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
        for node in nodes:
            log = node / "combined.log"
            if log.is_file():
                prefix = f"[node {node.name}] " if len(nodes) > 1 else ""
                for line in log.read_text(errors="replace").splitlines():
                    yield prefix + line
        return
    count = _replicas(handle)
    for k in range(count):
        prefix = f"[node {k}] " if count > 1 else ""
        for chunk in ask(sched, runner().log_lines, handle, ROLE, k=k, should_tail=follow):
            for line in chunk.splitlines():
                yield prefix + line


def stop(handle: str) -> None:
    """Cancel the app (the ranks get SIGTERM: the loop checkpoints and ends its MLflow run)."""
    sched, _, _ = parse_handle(handle)
    if sched == "local_cwd" and not _known_here(handle):
        _local_status(handle)  # an unknown handle is an error
        raise InvalidInputError(
            f"{handle} runs under the process that submitted it: stop it there (Ctrl-C)")
    ask(sched, runner().cancel, handle)


def list_jobs(scheduler: str) -> list[dict[str, Any]]:
    """Apps on `scheduler`: [{"handle", "app_id", "state"}]. local_cwd lists the apps whose
    logs are under local_log_root() (TorchX itself keeps no list for it)."""
    sched = parse_scheduler(scheduler)
    if sched == "local_cwd":
        root = local_log_root()
        jobs = []
        for session in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
            for app in sorted(p for p in session.iterdir() if p.is_dir()):
                handle = f"local_cwd://{session.name}/{app.name}"
                jobs.append({"handle": handle, "app_id": app.name,
                             "state": status(handle)["state"]})
        return jobs
    found = ask(sched, runner().list, sched)
    return [{"handle": a.app_handle, "app_id": a.app_id, "state": a.state.name} for a in found]
