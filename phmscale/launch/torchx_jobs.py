"""TorchX, part 2 of 3: the client — `--scheduler-arg` parsing, `submit`, then `status`,
`wait`, `logs`, `stop` and `list_jobs` on handles `scheduler://session/app_id`, and `TorchXJobs`,
the backend `phmscale status/logs/stop/list` use for those handles (`launch.backend`).

One TorchX runner per process (`runner`): local_cwd ranks are children of the submitting
process (TorchX keeps no record of them elsewhere), so `submit` must be followed by `wait`, and
the process's exit ends them. Their logs stay under `local_log_root()`, so status/logs/list also
work from another process. Scheduler-client errors become messages (`ask`), never tracebacks.

`--scheduler-arg key=value`: an unknown key is an error that names the closest valid one; a
value is cast to its TorchX run option's type; required run options must be given.
"""

import atexit
import difflib
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Dict, List  # noqa: UP035 (TorchX's run options use typing spellings)

from phmscale.errors import InvalidInputError, PhmscaleError
from phmscale.launch.record import JobRecord
from phmscale.launch.torchx import (
    MEM_MB_PER_RANK,
    ROLE,
    SHARED_FS,
    TORCHX_SCHEDULERS,
    app_for,
    parse_scheduler,
    require_torchx,
    specs,
)
from phmscale.paths import cache_root
from phmscale.spec import JobSpec

_RUNNER: Any = None


def runner() -> Any:
    """One TorchX runner per process: local_cwd apps are children of the runner that started
    them, so status/logs/stop on them must reach the same runner. It is closed at exit, which
    ends this process's local_cwd apps (TorchX's __del__ is not guaranteed to run then, and
    an orphaned torchrun would hold its ranks forever)."""
    global _RUNNER
    require_torchx()
    if _RUNNER is None:
        from torchx.runner import get_runner

        _RUNNER = get_runner()
        atexit.register(_RUNNER.close)
    return _RUNNER


def ask(sched: str, call: Any, *args: Any, **kwargs: Any) -> Any:
    """A runner call whose scheduler-client errors become messages (never tracebacks)."""
    from torchx.specs.api import InvalidRunConfigException, UnknownAppException

    try:
        return call(*args, **kwargs)
    except PhmscaleError:
        raise
    except UnknownAppException as error:
        raise InvalidInputError(f"no such TorchX app: {error}") from None
    except InvalidRunConfigException as error:
        raise InvalidInputError(f"torchx:{sched}: {error}") from None
    except ImportError as error:
        raise PhmscaleError(f"torchx:{sched} needs the Python package {error.name!r}: "
                            f"pip install {error.name}") from None
    except Exception as error:  # kubernetes' ApiException, squeue/scancel failures, …
        raise PhmscaleError(f"torchx:{sched}: {type(error).__name__}: {error}") from None


# phmscale's own --scheduler-arg keys, next to each scheduler's TorchX run options.
PHMSCALE_OPTS: dict[str, tuple] = {
    "image": (str, "container image (default: ghcr.io/phmscale/phmscale:cpu, or :cuda when "
                   "resources.gpus_per_worker > 0)"),
    "nproc_per_node": (int, "ranks per node; resources.workers must divide by it"),
    "mem_mb": (int, f"memory per node in MB (default {MEM_MB_PER_RANK} × nproc_per_node)"),
    "max_retries": (int, "scheduler-level retries of the whole app (default 0)"),
    "mount": (list, "repeatable, container schedulers: type=volume,src=<PVC>,dst=/mnt/x "
                    "(kubernetes) or type=bind,src=/host/path,dst=/mnt/x (local_docker)"),
}


def local_log_root() -> Path:
    """Where local_cwd apps keep their logs: `torchx/` in phmscale's cache."""
    return cache_root() / "torchx"


def _runopts(scheduler: str) -> Any:
    return runner().scheduler_run_opts(scheduler)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def valid_keys(scheduler: str) -> dict[str, str]:
    """--scheduler-arg keys for `scheduler`: TorchX's run options, then phmscale's own."""
    keys = {}
    for key, opt in _runopts(scheduler):
        need = "required" if opt.is_required else f"default {opt.default!r}"
        keys[key] = f"{_type_name(opt.opt_type)}, {need}: {opt.help}"
    for key, (tp, text) in PHMSCALE_OPTS.items():
        keys[key] = f"{tp.__name__}: {text}"
    return keys


def _cast(key: str, raw: str, tp: Any) -> Any:
    """A --scheduler-arg value typed as its run option says; a value that is not is an error."""
    try:
        if tp is bool:
            low = raw.strip().lower()
            if low not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return low in ("true", "1", "yes")
        if tp in (int, float, str):
            return tp(raw)
        if tp == List[str]:  # noqa: UP006
            return [v for v in raw.replace(";", ",").split(",") if v]
        if tp == Dict[str, str]:  # noqa: UP006
            pairs = [p for p in raw.replace(";", ",").split(",") if p]
            return {k: v for k, v in (p.split(":", 1) if ":" in p else p.split("=", 1)
                                      for p in pairs)}
    except ValueError:
        pass
    raise InvalidInputError(f"--scheduler-arg {key}={raw}: expected {_type_name(tp)}"
                            + (" (k:v pairs, comma-separated)" if tp == Dict[str, str] else ""))  # noqa: UP006


def parse_scheduler_args(scheduler: str, items: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """`k=v` items → (TorchX run config, phmscale options). Unknown keys are errors that list
    the valid ones; list-typed options may repeat (values accumulate)."""
    opts = {key: opt for key, opt in _runopts(scheduler)}
    cfg: dict[str, Any] = {}
    ours: dict[str, Any] = {}
    for item in items:
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise InvalidInputError(f"--scheduler-arg {item!r} must look like key=value")
        if key in opts:
            value = _cast(key, raw, opts[key].opt_type)
            if isinstance(value, list) and isinstance(cfg.get(key), list):
                value = cfg[key] + value
            elif isinstance(value, dict) and isinstance(cfg.get(key), dict):
                value = {**cfg[key], **value}
            cfg[key] = value
        elif PHMSCALE_OPTS.get(key, (None,))[0] is list:  # mount: TorchX's own token syntax
            tokens = [t for t in raw.split(",") if t]
            try:
                specs.parse_mounts(tokens)
            except (KeyError, ValueError) as error:
                raise InvalidInputError(f"--scheduler-arg {key}={raw}: {error}") from None
            ours.setdefault(key, []).extend(tokens)
        elif key in PHMSCALE_OPTS:
            ours[key] = _cast(key, raw, PHMSCALE_OPTS[key][0])
        else:
            valid = valid_keys(scheduler)
            close = difflib.get_close_matches(key, list(valid), n=1)
            listing = "\n".join(f"  {k} ({v})" for k, v in valid.items())
            raise InvalidInputError(
                f"unknown --scheduler-arg {key!r} for torchx:{scheduler}"
                + (f"; did you mean {close[0]!r}?" if close else "")
                + f"\nvalid keys for torchx:{scheduler}:\n{listing}")
    for key, opt in opts.items():
        if opt.is_required and key not in cfg:
            raise InvalidInputError(
                f"torchx:{scheduler} needs --scheduler-arg {key}=… ({opt.help})")
    if scheduler == "local_cwd" and "log_dir" not in cfg:
        cfg["log_dir"] = str(local_log_root())  # kept, so status/logs work from another process
    return cfg, ours


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
        app_id = info["app_id"].rsplit(":", 1)[-1]  # kubernetes: namespace:name
        return JobRecord(job_id=info["handle"], status=RECORD_STATUS[info["state"]],
                         name=re.sub(r"-[a-z0-9]{8,}$", "", app_id), message=info.get("msg") or "",
                         backend=self.name, dashboard_url=info.get("ui_url"))

    def status(self, job_id: str) -> Any:
        return self._record(status(job_id))

    def logs(self, job_id: str) -> str:
        return "".join(line + "\n" for line in logs(job_id))

    def follow(self, job_id: str, write: Any) -> Any:
        for line in logs(job_id, follow=True):
            write(line + "\n")
        return self._record(wait(job_id))

    def stop(self, job_id: str) -> Any:
        stop(job_id)
        return self._record(status(job_id))

    def list(self, everything: bool = False) -> list[Any]:  # every app is listed
        return [self._record({**job, "msg": ""}) for job in list_jobs(self.scheduler)]


def backend_for(handle_or_scheduler: str) -> TorchXJobs:
    """The backend for a handle (`slurm://torchx/123`) or a scheduler (`torchx:slurm`)."""
    if "://" in handle_or_scheduler:
        return TorchXJobs(parse_handle(handle_or_scheduler)[0])
    return TorchXJobs(handle_or_scheduler)
