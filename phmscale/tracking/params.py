"""The resolved spec as flat MLflow params: secrets from the environment as *** (see
`JobSpec.public_dump`), and values of secret-looking keys redacted as well."""

from __future__ import annotations

import re
from typing import Any

from phmscale.spec import JobSpec

REDACTED = "***redacted***"
_SECRET = re.compile(r"(token|passw(or)?d|secret|api[_-]?key|credential|private[_-]?key|auth)",
                     re.IGNORECASE)
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def redact(flat: dict[str, Any]) -> dict[str, Any]:
    """Replace the values of keys that look like tokens, passwords or secrets."""
    return {k: (REDACTED if _SECRET.search(k.rsplit(".", 1)[-1]) else v) for k, v in flat.items()}


def spec_params(spec: JobSpec) -> dict[str, str]:
    flat = redact(flatten(spec.public_dump()))
    return {k: str(v)[:MAX_PARAM_CHARS] for k, v in flat.items()}
