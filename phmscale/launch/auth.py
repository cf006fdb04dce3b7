"""Ray token authentication, as Ray 2.60 does it, from the client's side.

What Ray 2.60 does (read from ray/_private/authentication and ray/dashboard):
- A cluster runs with token auth when its processes see `RAY_AUTH_MODE=token`. `ray start
  --head` also turns it on by itself when a token already exists (RAY_AUTH_TOKEN,
  RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token) and RAY_AUTH_MODE is unset; a bare `ray.init()`
  that starts a new cluster turns it on always (unless RAY_AUTH_MODE says otherwise) and writes
  a fresh token to ~/.ray/auth_token when none exists.
- The dashboard (Jobs API, state API) then wants `Authorization: Bearer <token>` on every
  path except a few public ones; `/api/authentication_mode` is one of them and answers
  `{"authentication_mode": "token" | "disabled"}`. No header: HTTP 401; a wrong token: 403.
- Ray's own client sends the header only when *its* process has RAY_AUTH_MODE=token. We do
  not depend on that: we ask the cluster which mode it runs, and send the token only to a
  cluster that asks for one (a token is never offered to a cluster that did not ask).
- The token is looked up like Ray's C++ loader does (checked against it): RAY_AUTH_TOKEN if
  non-empty, else the file RAY_AUTH_TOKEN_PATH names (an error if set but unreadable or empty),
  else ~/.ray/auth_token.

The token itself never leaves this module except inside the HTTP header: messages name where
it came from, never what it is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from phmscale.launch.errors import ClusterAuthError, ClusterUnreachable

TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
MODE_ENV = "RAY_AUTH_MODE"
PROBE_TIMEOUT_S = 10.0

WHERE = (f"${TOKEN_ENV}, the file named by ${TOKEN_PATH_ENV}, or ~/.ray/auth_token "
         "(in that order)")


def default_token_path() -> Path:
    return Path.home() / ".ray" / "auth_token"


@dataclass(frozen=True)
class Token:
    value: str = ""
    source: str = ""  # "$RAY_AUTH_TOKEN", "$RAY_AUTH_TOKEN_PATH (/p)", "~/.ray/auth_token"

    def __repr__(self) -> str:  # never print the value
        return f"Token(source={self.source!r})"

    __str__ = __repr__

    def header(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.value}"}


def find_token() -> Token | None:
    """The token this process would present, or None when there is none."""
    value = os.environ.get(TOKEN_ENV, "").strip()
    if value:
        return Token(value, f"${TOKEN_ENV}")
    path_env = os.environ.get(TOKEN_PATH_ENV)
    if path_env:
        path = Path(path_env).expanduser()
        try:
            value = _read_token_file(path)
        except _Unreadable as error:
            raise ClusterAuthError(f"${TOKEN_PATH_ENV} names {path}, which cannot be read "
                                   f"({error}): fix the path or unset it") from None
        if value is None:
            raise ClusterAuthError(f"${TOKEN_PATH_ENV} names {path}, which does not exist: "
                                   "fix the path or unset it")
        if not value:
            raise ClusterAuthError(f"${TOKEN_PATH_ENV} names {path}, which is empty")
        return Token(value, f"${TOKEN_PATH_ENV} ({path})")
    path = default_token_path()
    try:
        value = _read_token_file(path)
    except _Unreadable as error:
        # Something is there but unusable (a directory, no permission): say so, rather than
        # carry on without a token and later report "no token found" for a file that exists.
        raise ClusterAuthError(
            f"the Ray token file {path} cannot be read ({error}): make it a file you can read "
            "holding the cluster's token (`ray get-auth-token` on the head node), or remove "
            f"it and export {TOKEN_ENV} or {TOKEN_PATH_ENV}, which are looked at first"
        ) from None
    return Token(value, str(path)) if value else None  # no file, or an empty one: no token


class _Unreadable(Exception):
    """Something is at a token path but cannot be read; the message is the reason."""


def _read_token_file(path: Path) -> str | None:
    """The file's text, stripped; None when nothing is there (nor a parent directory)."""
    try:
        return path.read_text(encoding="utf-8").strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except IsADirectoryError:
        raise _Unreadable("it is a directory") from None
    except OSError as error:
        raise _Unreadable(error.strerror or type(error).__name__) from None
    except UnicodeDecodeError:  # give the reason only: never echo the file's bytes (a token)
        raise _Unreadable("it is not UTF-8 text") from None


def cluster_auth_mode(url: str) -> str:
    """'token' or 'disabled' (also for a Ray too old to know tokens). Raises
    ClusterUnreachable when nothing (or no Ray dashboard) answers at `url`."""
    import requests

    try:
        reply = requests.get(url.rstrip("/") + "/api/authentication_mode",
                             timeout=PROBE_TIMEOUT_S)
    except requests.exceptions.RequestException as error:
        raise ClusterUnreachable(unreachable_message(url, error)) from None
    if reply.status_code == 404:
        return "disabled"  # a dashboard from before token auth
    if reply.status_code != 200:
        raise ClusterUnreachable(
            f"{url} answered /api/authentication_mode with HTTP {reply.status_code}: is it a "
            "Ray dashboard (default port 8265)?")
    try:
        return str(reply.json().get("authentication_mode", "disabled"))
    except ValueError:
        raise ClusterUnreachable(
            f"{url} does not look like a Ray dashboard (no JSON from "
            "/api/authentication_mode): pass the dashboard URL, e.g. http://HEAD:8265"
        ) from None


def unreachable_message(url: str, error: object) -> str:
    reason = type(error).__name__
    return (f"no Ray cluster answers at {url} ({reason}). Check --address / $RAY_ADDRESS "
            "(the dashboard URL, e.g. http://127.0.0.1:8265), start one with `ray start "
            "--head --dashboard-host=127.0.0.1`, or use `--address local`.")


def auth_headers(url: str) -> dict[str, str]:
    """The headers every request to the cluster at `url` needs ({} when it wants none)."""
    if cluster_auth_mode(url) != "token":
        return {}
    token = find_token()
    if token is None:
        raise ClusterAuthError(
            f"the Ray cluster at {url} requires token authentication and no token was found; "
            f"it is looked for in {WHERE}. Get the cluster's token (`ray get-auth-token` on "
            f"the head node) and export {TOKEN_ENV} or {TOKEN_PATH_ENV}.")
    return token.header()


def rejected_message(url: str) -> str:
    token = find_token()
    source = token.source if token else "nowhere"
    return (f"the Ray cluster at {url} rejected the authentication token (taken from "
            f"{source}). Tokens are looked for in {WHERE}; use the cluster's token "
            "(`ray get-auth-token` on the head node).")
