"""A validated job → what is sent to a Ray cluster.

Everything that depends on where the user typed `phmscale submit` is resolved here, before the
job leaves: relative checkpoint, data and cache paths become absolute (they name this machine's
files, or a shared mount), and the MLflow store is fixed (tracking.uri, else
$MLFLOW_TRACKING_URI, else sqlite:///<absolute cwd>/mlflow.db) so runs land where the user will
look. The resolved job travels as `job.yaml` in the runtime_env's working_dir; the phmscale
code travels as a py_module unless the cluster's image already has it.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from phmscale import __version__
from phmscale.spec import JobSpec

JOB_FILE = "job.yaml"
ENTRY_MODULE = "phmscale.launch.ray_entry"
METADATA_VALUE_MAX = 512  # Ray stores metadata with the job info in GCS; keep each value short
CodeMode = Literal["auto", "ship", "installed"]


def _is_url(value: str) -> bool:
    return "://" in value


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
    from phmscale.tracking.uri import split_credentials

    return split_credentials(uri)[0]


def resolve_for_cluster(spec: JobSpec, cwd: Path | None = None
                        ) -> tuple[JobSpec, dict[str, str]]:
    """(the spec with every submit-side choice fixed, the environment its workers need).

    The spec is rebuilt from its portable form: a secret stays a `${VAR}` reference, and the
    environment carries its value (with MLflow credentials split off the tracking URI, as
    MLFLOW_TRACKING_USERNAME/PASSWORD, the way MLflow's client reads them)."""
    from phmscale.spec import load_job_dict
    from phmscale.spec.identity import absolute_text
    from phmscale.tracking.uri import (
        PASSWORD_ENV,
        TOKEN_ENV,
        USERNAME_ENV,
        resolve_uri,
        split_credentials,
    )

    cwd = (cwd or Path.cwd()).resolve()
    data: dict[str, Any] = spec.portable_dump()
    real = spec.model_dump(mode="json")
    uri = resolve_uri(spec)  # the value: from the job, $MLFLOW_TRACKING_URI or the default
    text = data["tracking"]["uri"] or uri  # the job's text, ${VAR} kept, when it has one
    creds = split_credentials(uri)[1]
    data["tracking"]["uri"] = absolute_tracking_uri(split_credentials(text)[0], cwd)
    data["checkpoint"]["dir"] = absolute_text(
        data["checkpoint"]["dir"] or spec.checkpoint_dir, spec.checkpoint_dir, cwd)
    for key in ("train", "val", "tokenizer", "cache_dir"):
        if data["data"].get(key):
            data["data"][key] = absolute_text(data["data"][key], real["data"][key], cwd)
    resolved = load_job_dict(data, source="<resolved job>")
    env = resolved.secret_env
    env.update({k: os.environ[k] for k in (USERNAME_ENV, PASSWORD_ENV, TOKEN_ENV)
                if os.environ.get(k)})
    env.update(creds)
    return resolved, env


def check_shipped(text: str, env: dict[str, str]) -> None:
    """The last line of defence: what leaves for a cluster (job, metadata, arguments) holds
    none of the values that travel in the environment."""
    from phmscale.errors import InvalidInputError
    from phmscale.spec.secrets import MIN_MASKED_VALUE

    for name, value in env.items():
        if len(value) >= MIN_MASKED_VALUE and value in text:
            raise InvalidInputError(
                f"the value of ${name} would be sent to the cluster inside the job: write it "
                f"as ${{{name}}} in the job file (not through --set), so it travels in the "
                "workers' environment")


def new_submission_id(name: str) -> str:
    """Readable and unique: `<job or sweep name>-<UTC time>-<4 hex>`."""
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(2)}"


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
    secret_env: dict[str, str] = field(default_factory=dict)  # in runtime_env unless kept

    @property
    def storage(self) -> str:
        return self.spec.checkpoint_dir

    @property
    def tracking_uri(self) -> str:
        assert self.spec.tracking.uri is not None
        return self.spec.tracking.uri


def _runtime_env(workdir: Path, stop_grace_s: float, env: dict[str, str], ship: bool
                 ) -> dict[str, Any]:
    runtime_env: dict[str, Any] = {
        "working_dir": str(workdir),
        # unbuffered: `phmscale logs` sees each line when it is printed, not 8 KiB later;
        # no ANSI colours in the log prefixes (they end up in files and terminals alike)
        "env_vars": {"PYTHONUNBUFFERED": "1", "RAY_COLOR_PREFIX": "0",
                     # `phmscale stop`: SIGTERM, then this long to checkpoint before SIGKILL
                     "RAY_JOB_STOP_WAIT_TIME_S": str(stop_grace_s), **env},
    }
    if ship:
        runtime_env["py_modules"] = [str(package_root())]
        runtime_env["excludes"] = ["__pycache__", "*.pyc"]
    return runtime_env


def _entrypoint(interpreter: str, module: str, args: list[str]) -> str:
    return " ".join(shlex.quote(part) for part in (interpreter, "-m", module, *args))


def package_root() -> Path:
    import phmscale

    return Path(phmscale.__file__).resolve().parent


def build_submission(spec: JobSpec, *, code: CodeMode = "auto", local: bool = False,
                     python: str | None = None, cwd: Path | None = None,
                     forward_secrets: bool = True) -> Submission:
    """Everything `JobSubmissionClient.submit_job` needs; nothing here contacts a cluster.

    Secrets (see `JobSpec.public_dump`) never enter job.yaml or the metadata. With
    `forward_secrets` their values ride in runtime_env's env_vars, which Ray's dashboard
    shows to whoever can open it; without, the cluster's own environment must define them
    (a KubeRay secretKeyRef, the cluster YAML's env), and the driver says which is missing."""
    spec_hash = spec.spec_hash()
    resolved, secret_env = resolve_for_cluster(spec, cwd)
    submission_id = new_submission_id(spec.name)
    job_text = yaml.safe_dump(resolved.portable_dump(), sort_keys=False)
    check_shipped(job_text, secret_env)
    workdir = Path(tempfile.mkdtemp(prefix=f"phmscale-submit-{spec.name}-"))
    (workdir / JOB_FILE).write_text(
        f"# resolved by phmscale {__version__} submit; submission {submission_id}\n"
        + job_text)
    ship = code == "ship" or (code == "auto" and not local)
    runtime_env = _runtime_env(workdir, resolved.resources.stop_grace_s,
                               secret_env if forward_secrets else {}, ship)
    entrypoint = _entrypoint(python or (sys.executable if local else "python"), ENTRY_MODULE,
                             [JOB_FILE, "--submission-id", submission_id, "--spec-hash",
                              spec_hash])
    r = resolved.resources
    device = f"{r.gpus_per_worker:g} GPU" if r.gpus_per_worker else f"{r.cpus_per_worker:g} CPU"
    metadata = {
        "phmscale.job": spec.name,
        "phmscale.spec_hash": spec_hash,
        "phmscale.version": __version__,
        "phmscale.resources": f"{r.workers} workers x {device}",
        "phmscale.steps": str(resolved.train.steps),
        "phmscale.checkpoint": resolved.checkpoint_dir,
        "phmscale.fingerprint": resolved.fingerprint(),
        "phmscale.stop_grace_s": str(resolved.resources.stop_grace_s),
        "phmscale.mlflow_uri": public_uri(resolved.tracking.uri or ""),
        "phmscale.mlflow_experiment": resolved.tracking.experiment,
    }
    metadata = {k: resolved.mask(v)[:METADATA_VALUE_MAX] for k, v in metadata.items()}
    check_shipped(json.dumps(metadata) + entrypoint, secret_env)
    return Submission(resolved, spec_hash, submission_id, entrypoint, runtime_env, metadata,
                      workdir, ship, secret_env=secret_env)


SWEEP_FILE = "sweep.yaml"
SWEEP_ENTRY_MODULE = "phmscale.launch.sweep_entry"


def build_sweep_submission(sweep: Any, *, code: CodeMode = "auto", local: bool = False,
                           python: str | None = None, cwd: Path | None = None,
                           forward_secrets: bool = True) -> Submission:
    """A sweep (`phmscale.spec.sweep.Sweep`) as ONE Ray job: every cell resolved as `submit`
    resolves a job, all shipped in `sweep.yaml` for `launch.sweep_entry` (Ray Tune)."""
    from phmscale.launch.storage import sweep_storage

    cells, env = [], {}
    for cell in sweep.cells:
        resolved, cell_env = resolve_for_cluster(cell.spec, cwd)
        env.update(cell_env)
        cells.append({"index": cell.index, "label": cell.label, "values": cell.values,
                      "job": resolved.portable_dump(), "spec": resolved})
    first: JobSpec = cells[0]["spec"]
    s = sweep.settings
    record = {
        "sweep": {"id": sweep.sweep_id, "name": sweep.name, "axes": sweep.axes,
                  "max_concurrent": s.max_concurrent, "stop": s.stop,
                  "storage": sweep_storage(first.checkpoint_dir)},
        "cells": [{k: v for k, v in c.items() if k != "spec"} for c in cells],
    }
    text = yaml.safe_dump(record, sort_keys=False)
    check_shipped(text, env)
    submission_id = new_submission_id(sweep.name)
    workdir = Path(tempfile.mkdtemp(prefix=f"phmscale-sweep-{sweep.name}-"))
    (workdir / SWEEP_FILE).write_text(
        f"# resolved by phmscale {__version__} sweep; submission {submission_id}\n" + text)
    ship = code == "ship" or (code == "auto" and not local)
    runtime_env = _runtime_env(workdir, first.resources.stop_grace_s,
                               env if forward_secrets else {}, ship)
    entrypoint = _entrypoint(python or (sys.executable if local else "python"),
                             SWEEP_ENTRY_MODULE, [SWEEP_FILE, "--submission-id", submission_id])
    metadata = {
        "phmscale.job": sweep.name,
        "phmscale.kind": "sweep",
        "phmscale.sweep_id": sweep.sweep_id,
        "phmscale.cells": str(len(cells)),
        "phmscale.axes": ", ".join(sweep.axes),
        "phmscale.version": __version__,
        "phmscale.checkpoint": record["sweep"]["storage"],
        "phmscale.mlflow_uri": public_uri(first.tracking.uri or ""),
        "phmscale.mlflow_experiment": first.tracking.experiment,
    }
    metadata = {k: first.mask(v)[:METADATA_VALUE_MAX] for k, v in metadata.items()}
    check_shipped(json.dumps(metadata) + entrypoint, env)
    return Submission(first, sweep.sweep_id, submission_id, entrypoint, runtime_env, metadata,
                      workdir, ship, secret_env=env)
