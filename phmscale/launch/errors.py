"""Errors a user can cause when talking to a cluster: each message says what to do."""

from __future__ import annotations

from phmscale.errors import InvalidInputError, PhmscaleError


class ClusterUnreachable(PhmscaleError):
    """Nothing answers at the cluster address (or it is not a Ray dashboard)."""

    exit_code = 3


class ClusterAuthError(PhmscaleError):
    """The cluster demands a token and none was found, or the token was rejected."""

    exit_code = 4


class UnknownJob(InvalidInputError):
    """No job with this id on the cluster (exit 2: the argument is wrong)."""


class NoClusterAddress(InvalidInputError):
    """Neither --address nor RAY_ADDRESS says which cluster to use."""


class JobDidNotSucceed(PhmscaleError):
    """`submit --wait` saw the job end FAILED or STOPPED."""

    exit_code = 1
