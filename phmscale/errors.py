"""Errors a user can fix. The CLI prints their message (no traceback) and exits with `exit_code`."""

from __future__ import annotations


class PhmscaleError(Exception):
    """An error whose message is meant for the user: what went wrong, where, and how to fix it."""

    exit_code = 1


class InvalidInputError(PhmscaleError):
    """Bad input (a job file, a shard, an argument): exit code 2."""

    exit_code = 2
