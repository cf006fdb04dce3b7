"""TorchX launcher: a job spec → a TorchX AppDef that runs the engine's loop under torchrun.

Two doors, one AppDef builder (`_build_app`):
- the TorchX component `train` (`torchx run -s local_cwd phmscale/launch/torchx.py:train
  --job jobs/quickstart.yaml --nproc_per_node 2`), and
- the library the CLI wires to `phmscale submit JOB --scheduler torchx:<name>` and to
  status/logs/stop/list on handles `scheduler://session/app_id`: `app_for`, `submit`,
  `status`, `wait`, `logs`, `stop`, `list_jobs`, `is_torchx_handle`.

Each node (a TorchX replica) runs `python -m torch.distributed.run … -m
phmscale.launch.torchx_entry --job JOB [--set k=v]…`; torchrun exports RANK/WORLD_SIZE/
LOCAL_RANK/MASTER_ADDR/MASTER_PORT, which is all `phmscale.train.loop.train` reads.

Layout of `resources.workers` ranks (override with `--scheduler-arg nproc_per_node=K`):
- local_cwd, local_docker: one node (process tree / container) running `workers` ranks;
- kubernetes, slurm: `workers` nodes (pods / Slurm tasks) × 1 rank each, each node asking for
  `cpus_per_worker` CPUs and `gpus_per_worker` GPUs. With nproc_per_node=K: workers/K nodes.

local_cwd ranks are children of the submitting process (TorchX keeps no record of them
elsewhere): `submit` must be followed by `wait`, and the process's exit ends them. Their logs
stay under `local_log_root()`, so status/logs/list also work from another process.

Importing this module registers `TorchXJobs` in `phmscale.launch.backend.SCHEMES`, so
`phmscale status/logs/stop` route TorchX handles here.

TorchX 0.7.0 is its newest release and its Ray scheduler is gone upstream: Ray jobs go through
phmscale's own Ray launcher (`phmscale submit --address …`), never through TorchX.

No `from __future__ import annotations` here: TorchX reads the component's annotations at run
time and its linter accepts only `typing` spellings (Optional, List, Dict).
"""

import atexit
import difflib
import json
import math
import os
import re
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Dict, List, Optional  # noqa: UP035 (TorchX's component linter)

from phmscale.errors import InvalidInputError, PhmscaleError
from phmscale.spec import JobSpec, load_job

try:  # torchx is the optional `phmscale[torchx]` extra; is_torchx_handle works without it
    from torchx import specs
    from torchx.specs import AppDef
except ImportError:  # pragma: no cover - exercised only where torchx is absent
    specs = None

    class AppDef:  # type: ignore[no-redef]  # placeholder so the module still imports
        pass


SUPPORTED_SCHEDULERS = ("local_cwd", "local_docker", "kubernetes", "slurm")
# Every scheduler TorchX 0.7.0 names: a handle with one of these schemes is a TorchX handle.
TORCHX_SCHEDULERS = SUPPORTED_SCHEDULERS + (
    "kubernetes_mcad", "aws_batch", "aws_sagemaker", "gcp_batch", "ray", "lsf", "local")
SINGLE_NODE = ("local_cwd", "local_docker")  # all ranks on one node by default
SHARED_FS = ("local_cwd", "slurm")  # the submitter's working directory is the workers'
ROLE = "trainer"
ENTRY_MODULE = "phmscale.launch.torchx_entry"
IMAGES = {"cpu": "ghcr.io/phmscale/phmscale:cpu", "cuda": "ghcr.io/phmscale/phmscale:cuda"}
MEM_MB_PER_RANK = 4096  # a digits/mnist1d job peaks well under 2 GiB per rank on CPU
RDZV_PORT = 29500
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
_HANDLE = re.compile(r"^(?P<scheduler>[a-z_]+)://(?P<session>[^/]+)/(?P<app_id>.+)$")


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
    rank 0. The job file is loaded here to size the request; the workers load it again, so the
    path must also exist where they run (the working directory for local_cwd and slurm, the
    image's WORKDIR /app or a mount for local_docker and kubernetes).

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
    return _build_app(spec, job, sets, nnodes, nproc_per_node, image=image, cpu=cpu,
                      gpu=gpu, mem_mb=memMB, h=h, env=env, max_retries=max_retries,
                      rdzv_port=rdzv_port, python=python, mounts=mounts)


def _require_torchx() -> None:
    if specs is None:
        raise PhmscaleError("TorchX is not installed: pip install 'phmscale[torchx]'")


def _bash_arg(text: str) -> str:
    """Quote for `bash -c`, escaping `$` first: TorchX substitutes macros with
    string.Template over the whole command, which turns `$$` back into `$`."""
    return shlex.quote(text.replace("$", "$$"))


def _build_app(spec: JobSpec, job: str, sets: list[str], nnodes: int, nproc_per_node: int, *,
               image: str | None = None, cpu: int | None = None, gpu: int | None = None,
               mem_mb: int | None = None, h: str | None = None,
               env: dict[str, str] | None = None, max_retries: int = 0,
               rdzv_port: int = RDZV_PORT, python: str = "python",
               mounts: list[str] | None = None) -> AppDef:
    _require_torchx()
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
           "-m", ENTRY_MODULE, "--job", _bash_arg(job)]
    for item in sets:
        cmd += ["--set", _bash_arg(item)]
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


# -- schedulers and their arguments ---------------------------------------------------------


def parse_scheduler(name: str) -> str:
    """`torchx:slurm` or `slurm` → `slurm`; anything TorchX cannot run for us is an error."""
    sched = name.removeprefix("torchx:")
    if sched == "ray":
        raise InvalidInputError(
            "--scheduler torchx:ray is not supported: TorchX 0.7.0 is its newest release and "
            "upstream removed its Ray scheduler. Submit to Ray through phmscale's own Ray "
            "launcher instead: phmscale submit JOB.yaml --address http://HEAD:8265 (or "
            "RAY_ADDRESS). TorchX schedulers: " + ", ".join(f"torchx:{s}" for s in SUPPORTED_SCHEDULERS))
    if sched not in SUPPORTED_SCHEDULERS:
        hint = difflib.get_close_matches(sched, SUPPORTED_SCHEDULERS, n=1)
        raise InvalidInputError(
            f"unknown scheduler {name!r}" + (f"; did you mean torchx:{hint[0]}?" if hint else "")
            + "; supported: " + ", ".join(f"torchx:{s}" for s in SUPPORTED_SCHEDULERS))
    return sched


def _runopts(scheduler: str) -> Any:
    return _runner().scheduler_run_opts(scheduler)


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


# -- library: submit and manage --------------------------------------------------------------


def local_log_root() -> Path:
    """Where local_cwd apps keep their logs: $PHMSCALE_CACHE/torchx, else ~/.cache/phmscale/torchx."""
    base = os.environ.get("PHMSCALE_CACHE") or "~/.cache/phmscale"
    return Path(base).expanduser() / "torchx"


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
    return _build_app(spec, job, list(sets), workers // nproc, nproc, image=image,
                      mem_mb=mem_mb, max_retries=max_retries, mounts=mount,
                      python=sys.executable if shared else "python")


_RUNNER: Any = None


def _runner() -> Any:
    """One TorchX runner per process: local_cwd apps are children of the runner that started
    them, so status/logs/stop on them must reach the same runner. It is closed at exit, which
    ends this process's local_cwd apps (TorchX's __del__ is not guaranteed to run then, and
    an orphaned torchrun would hold its ranks forever)."""
    global _RUNNER
    _require_torchx()
    if _RUNNER is None:
        from torchx.runner import get_runner

        _RUNNER = get_runner()
        atexit.register(_RUNNER.close)
    return _RUNNER


def submit(spec: JobSpec, job_path: str, scheduler: str, scheduler_args: list[str],
           sets: list[str], dryrun: bool = False) -> Any:
    """Submit through TorchX; returns the handle `scheduler://session/app_id`, or with
    `dryrun=True` TorchX's AppDryRunInfo (str() of it is the exact scheduler request).

    local_cwd runs the ranks as children of this process: they end when it exits, so a CLI
    must `wait` (and may stream `logs(handle, follow=True)`), as `torchx run` itself does."""
    sched = parse_scheduler(scheduler)
    cfg, ours = parse_scheduler_args(sched, scheduler_args)
    app = app_for(spec, job_path, sets, sched, **ours)
    _check_storage(spec, sched, app.roles[0].num_replicas, bool(ours.get("mount")), dryrun)
    runner = _runner()
    info = _ask(sched, runner.dryrun, app, sched, cfg=cfg)
    if dryrun:
        return info
    return _ask(sched, runner.schedule, info)


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


def _parse_handle(handle: str) -> tuple[str, str, str]:
    match = _HANDLE.match(handle)
    if not match or match["scheduler"] not in TORCHX_SCHEDULERS:
        raise InvalidInputError(f"{handle!r} is not a TorchX handle (scheduler://session/app_id)")
    parse_scheduler(match["scheduler"])  # ray:// and the rest get their explanation
    return match["scheduler"], match["session"], match["app_id"]


def _local_dir(handle: str) -> Path:
    _, session, app_id = _parse_handle(handle)
    return local_log_root() / session / app_id


def _ask(sched: str, call: Any, *args: Any, **kwargs: Any) -> Any:
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


def _known_here(handle: str) -> bool:
    return handle in _runner()._apps  # the runner's own record of its apps


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

    sched, _, app_id = _parse_handle(handle)
    if sched == "local_cwd" and not _known_here(handle):
        info = _local_status(handle)
    else:
        found = _ask(sched, _runner().status, handle)
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
    app = _ask(_parse_handle(handle)[0], _runner().describe, handle)
    if app is None:
        raise InvalidInputError(f"no such TorchX app: {handle}")
    return max((r.num_replicas for r in app.roles if r.name == ROLE), default=1)


def logs(handle: str, follow: bool = False) -> Iterator[str]:
    """The app's log lines (every node, prefixed `[node k]` when there are several); with
    `follow`, keep yielding until the app ends."""
    sched, _, _ = _parse_handle(handle)
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
        for chunk in _ask(sched, _runner().log_lines, handle, ROLE, k=k, should_tail=follow):
            for line in chunk.splitlines():
                yield prefix + line


def stop(handle: str) -> None:
    """Cancel the app (the ranks get SIGTERM: the loop checkpoints and ends its MLflow run)."""
    sched, _, _ = _parse_handle(handle)
    if sched == "local_cwd" and not _known_here(handle):
        _local_status(handle)  # an unknown handle is an error
        raise InvalidInputError(
            f"{handle} runs under the process that submitted it: stop it there (Ctrl-C)")
    _ask(sched, _runner().cancel, handle)


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
    found = _ask(sched, _runner().list, sched)
    return [{"handle": a.app_handle, "app_id": a.app_id, "state": a.state.name} for a in found]


# -- the job backend `phmscale status/logs/stop/list` dispatch to (phmscale.launch.backend) ------

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

    def list(self) -> list[Any]:
        return [self._record({**job, "msg": ""}) for job in list_jobs(self.scheduler)]


def backend_for(handle_or_scheduler: str) -> TorchXJobs:
    """The backend for a handle (`slurm://torchx/123`) or a scheduler (`torchx:slurm`)."""
    if "://" in handle_or_scheduler:
        return TorchXJobs(_parse_handle(handle_or_scheduler)[0])
    return TorchXJobs(handle_or_scheduler)


def _register() -> None:
    try:
        from phmscale.launch.backend import SCHEMES
    except ImportError:  # pragma: no cover - the Ray launcher's dispatch is not there
        return
    for scheme in TORCHX_SCHEDULERS:  # unsupported ones get backend_for's explanation
        SCHEMES.setdefault(scheme, ("phmscale.launch.torchx", "backend_for"))


_register()
