"""TorchX schedulers and `--scheduler-arg key=value`: which schedulers phmscale runs on, and
the typed, validated run config (TorchX's run options) and phmscale options they become.

An unknown scheduler or key is an error that names the closest valid one; a key's value is
cast to its run option's type; required run options must be given.
"""

import difflib
import os
from pathlib import Path
from typing import Any, Dict, List  # noqa: UP035 (TorchX's run options use typing spellings)

from phmscale.errors import InvalidInputError
from phmscale.launch.torchx_runner import runner, specs

SUPPORTED_SCHEDULERS = ("local_cwd", "local_docker", "kubernetes", "slurm")
# Every scheduler TorchX 0.7.0 names: a handle with one of these schemes is a TorchX handle.
TORCHX_SCHEDULERS = SUPPORTED_SCHEDULERS + (
    "kubernetes_mcad", "aws_batch", "aws_sagemaker", "gcp_batch", "ray", "lsf", "local")
SINGLE_NODE = ("local_cwd", "local_docker")  # all ranks on one node by default
SHARED_FS = ("local_cwd", "slurm")  # the submitter's working directory is the workers'
MEM_MB_PER_RANK = 4096  # a digits/mnist1d job peaks well under 2 GiB per rank on CPU
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


def local_log_root() -> Path:
    """Where local_cwd apps keep their logs: $PHMSCALE_CACHE/torchx, else ~/.cache/phmscale/torchx."""
    base = os.environ.get("PHMSCALE_CACHE") or "~/.cache/phmscale"
    return Path(base).expanduser() / "torchx"


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
