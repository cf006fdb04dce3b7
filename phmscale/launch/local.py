"""`--address local`: a Ray cluster that lives inside this `phmscale submit` process.

It starts with `ray.init`, its dashboard (and so the Jobs API) on 127.0.0.1 only, and ends with
the command; the job goes through the same Jobs API path as on any other cluster.

Token authentication follows Ray's default for a new `ray.init()` cluster (on unless
RAY_AUTH_MODE says otherwise), without Ray's side effects: Ray would write a new token to
~/.ray/auth_token, and a token taken from $RAY_AUTH_TOKEN would sit in the environment of every
process of the cluster, the job's included. Instead, an existing token file is used as it is,
and otherwise the token (the one in $RAY_AUTH_TOKEN, or a fresh one) is written to a private
0600 file named by $RAY_AUTH_TOKEN_PATH, removed when the cluster stops.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path

from phmscale.launch import auth
from phmscale.launch.errors import ClusterUnreachable
from phmscale.net import free_port

READY_TIMEOUT_S = 120.0


class LocalCluster:
    """Context manager: `with LocalCluster(num_cpus=4) as url:` → the dashboard URL."""

    def __init__(self, num_cpus: float | None = None, num_gpus: int | None = None):
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.url = ""
        self.temp_dir: Path | None = None  # the cluster's logs: removed at exit unless kept
        self.keep_logs = False
        self._saved_env: dict[str, str | None] = {}
        self._token_dir: Path | None = None

    def _set_env(self, key: str, value: str | None) -> None:
        self._saved_env.setdefault(key, os.environ.get(key))
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value

    def _prepare_auth(self) -> None:
        mode = os.environ.get(auth.MODE_ENV, "").strip().lower()
        if mode and mode != "token":
            return  # the user asked for no token auth
        self._set_env(auth.MODE_ENV, "token")
        token = auth.find_token()
        if token is not None and not token.source.startswith(f"${auth.TOKEN_ENV}"):
            return  # a token file: Ray's processes read it themselves
        self._token_dir = Path(tempfile.mkdtemp(prefix="phmscale-ray-token-"))
        path = self._token_dir / "auth_token"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token.value if token else secrets.token_hex(32))
        self._set_env(auth.TOKEN_PATH_ENV, str(path))
        self._set_env(auth.TOKEN_ENV, None)

    def __enter__(self) -> str:
        self._prepare_auth()
        import ray

        port = free_port()
        # A private temp dir (short: Ray's socket paths must stay under 107 characters), and in
        # it the `ray_current_cluster` file that `ray start` writes and `ray.init` does not. The
        # job supervisor finds the GCS for the job's driver by reading that file in the
        # cluster's temp dir, and without it takes *any* GCS process running on the machine:
        # with a second cluster around (another user's, a test's), the job's driver would
        # connect to that one.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="phmscale-ray-", dir="/tmp"))
        try:
            context = ray.init(address="local", num_cpus=self.num_cpus, num_gpus=self.num_gpus,
                               include_dashboard=True, dashboard_host="127.0.0.1",
                               dashboard_port=port, _temp_dir=str(self.temp_dir),
                               logging_level=logging.WARNING, log_to_driver=False)
            (self.temp_dir / "ray_current_cluster").write_text(context.address_info["gcs_address"])
        except Exception:
            self._restore()
            raise
        self.url = f"http://127.0.0.1:{port}"
        self._wait_ready()
        return self.url

    def _wait_ready(self) -> None:
        """The dashboard answers, and the Jobs API behind it (needs the head's agent)."""
        import requests

        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                headers = auth.auth_headers(self.url)
                reply = requests.get(self.url + "/api/jobs/", headers=headers, timeout=5)
                if reply.status_code == 200:
                    return
            except (ClusterUnreachable, requests.exceptions.RequestException):
                pass
            if time.monotonic() > deadline:
                raise ClusterUnreachable(
                    f"the local Ray cluster's dashboard did not come up at {self.url} within "
                    f"{READY_TIMEOUT_S:.0f} s; see {self.temp_dir}/session_latest/logs/"
                    "dashboard.log")
            time.sleep(0.5)

    def _restore(self) -> None:
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()
        if self._token_dir is not None:
            shutil.rmtree(self._token_dir, ignore_errors=True)
            self._token_dir = None

    def __exit__(self, *exc: object) -> None:
        import ray

        try:
            ray.shutdown()
        finally:
            self._restore()
            if self.temp_dir is not None and not self.keep_logs and exc[0] is None:
                shutil.rmtree(self.temp_dir, ignore_errors=True)
