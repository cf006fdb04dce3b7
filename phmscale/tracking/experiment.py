"""The MLflow experiment a job logs to, created with an artifact location tied to the store.

MLflow records an experiment's artifact location once, when it creates the experiment. For a
database store used without a server (sqlite:///mlflow.db) its default is `./mlruns/<id>`
resolved against the creating process's working directory: a Ray Train worker (cwd: its
per-run folder in the cluster's session directory) or a TorchX rank started elsewhere would
pin every later run of the experiment to that folder, and `phmscale compare` or the MLflow
UI, started next to the database, would not find the artifacts. So experiments phmscale
creates on a sqlite store put them next to the database file: `<db dir>/mlruns/<name>`
(an absolute file:// URI; with the database in the working directory, as by default, that is
the same `mlruns` folder MLflow would have used).

Left to MLflow, on purpose:
- an HTTP(S) tracking server: it has its own artifact root (`--artifacts-destination`);
- a file store (file:///…/mlruns, allowed only with MLFLOW_ALLOW_FILE_STORE in MLflow 3.x):
  its default `<store root>/<id>` is already absolute and inside the store, wherever the
  process runs (a relative store path moves with the working directory anyway);
- other databases (postgresql://, mysql://) used directly: there is no file to sit next to.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote

_SQLITE = "sqlite:///"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def artifact_location(uri: str, experiment: str) -> str | None:
    """The artifact location to create `experiment` with on store `uri`; None: MLflow's."""
    if not uri.startswith(_SQLITE):
        return None
    db = unquote(uri[len(_SQLITE):].split("?", 1)[0])
    if not db or db == ":memory:":
        return None
    # Resolved against this process's cwd exactly as sqlite resolves a relative database path,
    # so the folder always sits next to the database this process opens.
    folder = Path(os.path.abspath(db)).parent / "mlruns" / _folder_name(experiment)
    return folder.as_uri()


def _folder_name(experiment: str) -> str:
    """One safe path component: experiment names may hold '/', spaces or '..'."""
    name = _UNSAFE.sub("_", experiment).lstrip(".")
    return name or "_"


def ensure_experiment(uri: str, experiment: str) -> str:
    """The id of `experiment` on `uri`, creating it (see the module docstring) if missing."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(experiment,
                                        artifact_location=artifact_location(uri, experiment))
    except MlflowException:  # created meanwhile by another process: use theirs
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise
        return found.experiment_id
