"""MLflow tracking: logging from rank 0 through the engine's hooks (one run per job across
restarts), the tracking URI and its reachability check, and `phmscale compare` tables and
plots. MLflow is the store; nothing here keeps a store of its own."""

from phmscale.tracking.mlflow_hook import MLflowHook, tracking_hooks
from phmscale.tracking.params import redact, spec_params
from phmscale.tracking.uri import DEFAULT_URI, TrackingUnavailable, check_reachable, resolve_uri

__all__ = [
    "DEFAULT_URI",
    "MLflowHook",
    "TrackingUnavailable",
    "check_reachable",
    "redact",
    "resolve_uri",
    "spec_params",
    "tracking_hooks",
]
