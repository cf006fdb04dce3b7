"""Without a cluster: which Ray errors mean "no such job" (only a real HTTP 404 from the Jobs
API, not any text holding "404" or "does not exist"), and token files that exist but cannot be
read (a clear ClusterAuthError naming the path, no traceback)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from phmscale.launch import auth
from phmscale.launch.errors import ClusterAuthError, UnknownJob
from phmscale.launch.ray_jobs import RayJobs, _is_not_found

JOB_ID = "quickstart-20250404-120000-ab12"  # a date in the id: "404" is in there twice
URL = "http://127.0.0.1:8265"


def _ray_error(status: int, body: str) -> RuntimeError:
    """The error Ray 2.60's JobSubmissionClient raises for a non-200 reply, made by Ray's own
    code (`SubmissionClient._raise_error`) so the test follows its wording."""
    from ray.dashboard.modules.dashboard_sdk import SubmissionClient

    try:
        SubmissionClient._raise_error(None, SimpleNamespace(status_code=status, text=body))
    except RuntimeError as error:
        return error
    raise AssertionError("Ray's _raise_error did not raise")


# -- _is_not_found ---------------------------------------------------------------------------


def test_rays_404_for_an_unknown_job_is_not_found():
    # what the dashboard answers for get_job_info / stop_job / get_job_logs of an unknown id
    error = _ray_error(404, f"Job {JOB_ID} does not exist")
    assert str(error) == f"Request failed with status code 404: Job {JOB_ID} does not exist."
    assert _is_not_found(error)


@pytest.mark.parametrize(
    "status, body",
    [
        # a server error whose traceback mentions the (dated) id and "does not exist"
        (500, "Traceback (most recent call last):\n  File \"job_head.py\", line 468, in "
              f"stop_job\nFileNotFoundError: /tmp/ray/session_2025-04-04_12-00-00/logs/"
              f"job-driver-{JOB_ID}.log does not exist"),
        (400, "Can only stop submission type jobs"),
        (503, f"No available agent to submit job {JOB_ID}, please try again later."),
        (502, "upstream 404 page does not exist"),
    ],
)
def test_other_ray_errors_are_not_not_found(status, body):
    assert not _is_not_found(_ray_error(status, body))


@pytest.mark.parametrize(
    "text",
    [
        f"No available agent to submit job {JOB_ID}, please try again later.",
        "Ray job 'quickstart-20250404-000000-404a' does not exist in the cache",
        "Request failed with status code 4040: odd",
    ],
)
def test_text_that_merely_contains_404_is_not_not_found(text):
    assert not _is_not_found(RuntimeError(text))


def test_errors_maps_only_the_404_to_unknown_job():
    with pytest.raises(UnknownJob, match=f"no job '{JOB_ID}' on the Ray cluster at {URL}"):
        with RayJobs._errors(URL, JOB_ID):
            raise _ray_error(404, f"Job {JOB_ID} does not exist")
    server_error = _ray_error(500, f"job-driver-{JOB_ID}.log does not exist")
    with pytest.raises(RuntimeError) as info:
        with RayJobs._errors(URL, JOB_ID):
            raise server_error
    assert info.value is server_error  # not reported as an unknown job


# -- unreadable token files ------------------------------------------------------------------


@pytest.fixture
def token_path(monkeypatch, tmp_path) -> Path:
    """~/.ray/auth_token in a private HOME, with no token variables set."""
    for var in (auth.TOKEN_ENV, auth.TOKEN_PATH_ENV, auth.MODE_ENV):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    path = home / ".ray" / "auth_token"
    assert auth.default_token_path() == path
    path.parent.mkdir(parents=True)
    return path


def test_missing_or_empty_default_file_is_no_token(token_path):
    assert auth.find_token() is None
    token_path.write_text("\n")
    assert auth.find_token() is None
    token_path.write_text("abc123\n")
    assert auth.find_token().value == "abc123"


def test_no_dot_ray_directory_is_no_token(token_path):
    token_path.parent.rmdir()
    assert auth.find_token() is None
    token_path.parent.write_text("a file where ~/.ray should be a directory")
    assert auth.find_token() is None


def test_directory_at_the_default_path_is_a_clear_error(token_path):
    token_path.mkdir()
    with pytest.raises(ClusterAuthError) as info:
        auth.find_token()
    message = str(info.value)
    assert str(token_path) in message and "it is a directory" in message
    assert "RAY_AUTH_TOKEN" in message and "ray get-auth-token" in message
    assert info.value.exit_code == 4


def test_permission_denied_on_the_default_path_is_a_clear_error(token_path, monkeypatch):
    token_path.write_text("secret-token-value")
    # Tests run as root, where chmod 000 does not stop reads: make the read fail as it would.
    real_read_text = Path.read_text

    def read_text(self, *args, **kwargs):
        if self == token_path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    with pytest.raises(ClusterAuthError) as info:
        auth.find_token()
    message = str(info.value)
    assert str(token_path) in message and "Permission denied" in message
    assert "secret-token-value" not in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file anyway")
def test_chmod_000_default_file_is_a_clear_error(token_path):
    token_path.write_text("secret-token-value")
    token_path.chmod(0)
    try:
        with pytest.raises(ClusterAuthError, match="Permission denied"):
            auth.find_token()
    finally:
        token_path.chmod(0o600)


def test_binary_default_file_is_a_clear_error_without_its_bytes(token_path):
    token_path.write_bytes(b"\xff\xfes\x00e\x00c\x00")
    with pytest.raises(ClusterAuthError, match="not UTF-8 text") as info:
        auth.find_token()
    assert "\\xff" not in str(info.value) and "0xff" not in str(info.value)


def test_token_variables_win_over_a_broken_default_file(token_path, monkeypatch):
    token_path.mkdir()
    monkeypatch.setenv(auth.TOKEN_ENV, "from-env")
    assert auth.find_token().value == "from-env"
    monkeypatch.delenv(auth.TOKEN_ENV)
    good = token_path.parent / "good"
    good.write_text("from-path")
    monkeypatch.setenv(auth.TOKEN_PATH_ENV, str(good))
    assert auth.find_token().value == "from-path"


def test_token_path_variable_naming_a_directory_is_a_clear_error(token_path, monkeypatch):
    monkeypatch.setenv(auth.TOKEN_PATH_ENV, str(token_path.parent))
    with pytest.raises(ClusterAuthError, match=r"RAY_AUTH_TOKEN_PATH names .*\.ray, which "
                                               r"cannot be read \(it is a directory\)"):
        auth.find_token()
    monkeypatch.setenv(auth.TOKEN_PATH_ENV, str(token_path.parent / "missing"))
    with pytest.raises(ClusterAuthError, match="missing, which does not exist"):
        auth.find_token()
