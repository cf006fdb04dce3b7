"""Which MLflow store a job logs to, and a fast check that it answers."""

from __future__ import annotations

import os
import urllib.error
import urllib.request

from phmscale.errors import PhmscaleError
from phmscale.spec import JobSpec

DEFAULT_URI = "sqlite:///mlflow.db"  # MLflow's own default store, in the working directory


class TrackingUnavailable(PhmscaleError):
    """The tracking server does not answer: reported before training, not after an hour."""

    exit_code = 3


def resolve_uri(spec: JobSpec | None = None) -> str:
    """tracking.uri, else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db."""
    if spec is not None and spec.tracking.uri:
        return spec.tracking.uri
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """An HTTP(S) server must answer /health within `timeout` s. MLflow's own client would
    retry with backoff for minutes (7 retries by default) before giving up."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as reply:
            if reply.status != 200:
                raise TrackingUnavailable(
                    f"MLflow server {uri} answered /health with HTTP {reply.status}"
                )
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise TrackingUnavailable(
            f"MLflow tracking server {uri} is unreachable ({reason}). Start it (mlflow server "
            "--backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000), fix "
            "tracking.uri / $MLFLOW_TRACKING_URI, or unset both to log to sqlite:///mlflow.db."
        ) from None
