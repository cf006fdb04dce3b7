"""Which MLflow store a job logs to, and a fast check that it answers."""

from __future__ import annotations

import base64
import os
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

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


def store_exists(uri: str) -> bool:
    """False for a sqlite store whose file does not exist: reading it through MLflow would
    create an empty database (tables and all) just to find nothing there."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).is_file()
    return True


USERNAME_ENV, PASSWORD_ENV, TOKEN_ENV = (
    "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


def split_credentials(uri: str) -> tuple[str, dict[str, str]]:
    """`http://alice:pw@host` → (`http://host`, {MLFLOW_TRACKING_USERNAME: alice,
    MLFLOW_TRACKING_PASSWORD: pw}): the form MLflow's client reads credentials in, kept out
    of every URI that is logged, printed or shipped."""
    if "://" not in uri:
        return uri, {}
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri, {}
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, has_password, password = userinfo.partition(":")
    env = {USERNAME_ENV: unquote(user)}
    if has_password:
        env[PASSWORD_ENV] = unquote(password)
    return urlunsplit(parts._replace(netloc=host)), env


def use_credentials(uri: str) -> str:
    """The URI without userinfo; its credentials go to this process's environment, where
    MLflow's client (and the workers this process starts) read them."""
    public, env = split_credentials(uri)
    os.environ.update(env)
    return public


def _auth_header() -> dict[str, str]:
    if os.environ.get(TOKEN_ENV):
        return {"Authorization": f"Bearer {os.environ[TOKEN_ENV]}"}
    if os.environ.get(USERNAME_ENV):
        pair = f"{os.environ[USERNAME_ENV]}:{os.environ.get(PASSWORD_ENV, '')}"
        return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}
    return {}


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """An HTTP(S) server must answer /health within `timeout` s. MLflow's own client would
    retry with backoff for minutes (7 retries by default) before giving up. Credentials in
    the URI are sent as MLflow sends them (basic auth), never shown."""
    if not uri.startswith(("http://", "https://")):
        return
    uri, creds = split_credentials(uri)
    headers = _auth_header()
    if creds:
        pair = f"{creds[USERNAME_ENV]}:{creds.get(PASSWORD_ENV, '')}"
        headers = {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}
    try:
        request = urllib.request.Request(uri.rstrip("/") + "/health", headers=headers)
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            if reply.status != 200:
                raise TrackingUnavailable(
                    f"MLflow server {uri} answered /health with HTTP {reply.status}"
                )
    except urllib.error.HTTPError as error:
        raise TrackingUnavailable(
            f"MLflow server {uri} answered /health with HTTP {error.code}"
            + (": check MLFLOW_TRACKING_USERNAME/PASSWORD (or the URI's user:password)"
               if error.code in (401, 403) else "")) from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise TrackingUnavailable(
            f"MLflow tracking server {uri} is unreachable ({reason}). Start it (mlflow server "
            "--backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000), fix "
            "tracking.uri / $MLFLOW_TRACKING_URI, or unset both to log to sqlite:///mlflow.db."
        ) from None
