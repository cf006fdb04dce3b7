"""A validated job → what is sent to a Ray cluster.

Everything that depends on where the user typed `phmscale submit` is resolved here, before the
job leaves: relative checkpoint, data and cache paths become absolute (they name this machine's
files, or a shared mount), and the MLflow store is fixed (tracking.uri, else
$MLFLOW_TRACKING_URI, else sqlite:///<absolute cwd>/mlflow.db) so runs land where the user will
look. The resolved job travels as `job.yaml` in the runtime_env's working_dir; the phmscale
code travels as a py_module unless the cluster's image already has it.
"""

from __future__ import annotations

import secrets
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml

from phmscale import __version__
from phmscale.spec import JobSpec

JOB_FILE = "job.yaml"
ENTRY_MODULE = "phmscale.launch.ray_entry"
METADATA_VALUE_MAX = 512  # Ray stores metadata with the job info in GCS; keep each value short
CodeMode = Literal["auto", "ship", "installed"]


def _is_url(value: str) -> bool:
    return "://" in value


def absolute_path(value: str, cwd: Path) -> str:
    """A local path made absolute against `cwd`; URLs, pipe: and builtin: stay as they are."""
    if _is_url(value) or value.startswith(("pipe:", "builtin:")) or value.startswith("/"):
        return value
    return str(cwd / value)


def absolute_tracking_uri(uri: str, cwd: Path) -> str:
    """sqlite:///rel.db → sqlite:////<cwd>/rel.db; a bare path → absolute; servers unchanged."""
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):]
        return uri if path.startswith("/") else f"sqlite:///{cwd / path}"
    if _is_url(uri):
        return uri
    if uri.startswith("file:"):
        path = uri[len("file:"):]
        return uri if path.startswith("/") else f"file:{cwd / path}"
    return str((cwd / uri).resolve())


def public_uri(uri: str) -> str:
    """The URI without credentials (user:password@host), for metadata and messages."""
    if not _is_url(uri):
        return uri
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def resolve_for_cluster(spec: JobSpec, cwd: Path | None = None) -> JobSpec:
    """The spec with every submit-side choice fixed (see the module docstring)."""
    from phmscale.tracking.uri import resolve_uri

    cwd = (cwd or Path.cwd()).resolve()
    data: dict[str, Any] = spec.model_dump(mode="json")
    data["tracking"]["uri"] = absolute_tracking_uri(resolve_uri(spec), cwd)
    data["checkpoint"]["dir"] = absolute_path(spec.checkpoint_dir, cwd)
    for key in ("train", "val", "cache_dir"):
        if data["data"].get(key):
            data["data"][key] = absolute_path(data["data"][key], cwd)
    return JobSpec.model_validate(data)


def new_submission_id(spec: JobSpec) -> str:
    """Readable and unique: `<job name>-<UTC time>-<4 hex>`."""
    return f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(2)}"


@dataclass
class Submission:
    spec: JobSpec  # resolved
    spec_hash: str  # of the spec as the user wrote it (what `phmscale run` would log)
    submission_id: str
    entrypoint: str
    runtime_env: dict[str, Any]
    metadata: dict[str, str]
    workdir: Path  # temporary; holds job.yaml, removed after submit
    ship_code: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def storage(self) -> str:
        return self.spec.checkpoint_dir

    @property
    def tracking_uri(self) -> str:
        assert self.spec.tracking.uri is not None
        return self.spec.tracking.uri


def package_root() -> Path:
    import phmscale

    return Path(phmscale.__file__).resolve().parent


def build_submission(spec: JobSpec, *, code: CodeMode = "auto", local: bool = False,
                     python: str | None = None, cwd: Path | None = None) -> Submission:
    """Everything `JobSubmissionClient.submit_job` needs; nothing here contacts a cluster."""
    spec_hash = spec.spec_hash()
    resolved = resolve_for_cluster(spec, cwd)
    submission_id = new_submission_id(spec)
    workdir = Path(tempfile.mkdtemp(prefix=f"phmscale-submit-{spec.name}-"))
    (workdir / JOB_FILE).write_text(
        f"# resolved by phmscale {__version__} submit; submission {submission_id}\n"
        + yaml.safe_dump(resolved.model_dump(mode="json"), sort_keys=False))
    ship = code == "ship" or (code == "auto" and not local)
    runtime_env: dict[str, Any] = {
        "working_dir": str(workdir),
        # unbuffered: `phmscale logs` sees each line when it is printed, not 8 KiB later;
        # no ANSI colours in the log prefixes (they end up in files and terminals alike)
        "env_vars": {"PYTHONUNBUFFERED": "1", "RAY_COLOR_PREFIX": "0"},
    }
    if ship:
        runtime_env["py_modules"] = [str(package_root())]
        runtime_env["excludes"] = ["__pycache__", "*.pyc"]
    interpreter = python or (sys.executable if local else "python")
    entrypoint = " ".join(shlex.quote(part) for part in (
        interpreter, "-m", ENTRY_MODULE, JOB_FILE, "--submission-id", submission_id,
        "--spec-hash", spec_hash))
    r = resolved.resources
    device = f"{r.gpus_per_worker:g} GPU" if r.gpus_per_worker else f"{r.cpus_per_worker:g} CPU"
    metadata = {
        "phmscale.job": spec.name,
        "phmscale.spec_hash": spec_hash,
        "phmscale.version": __version__,
        "phmscale.resources": f"{r.workers} workers x {device}",
        "phmscale.steps": str(resolved.train.steps),
        "phmscale.checkpoint": resolved.checkpoint_dir,
        "phmscale.mlflow_uri": public_uri(resolved.tracking.uri or ""),
        "phmscale.mlflow_experiment": resolved.tracking.experiment,
    }
    metadata = {k: v[:METADATA_VALUE_MAX] for k, v in metadata.items()}
    return Submission(resolved, spec_hash, submission_id, entrypoint, runtime_env, metadata,
                      workdir, ship)
