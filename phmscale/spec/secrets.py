"""Values a job read from the environment, and the job shown or shipped without them.

A `${VAR}` in a job file reads the environment. Unless VAR is named in the job's `public_env`,
its value is a secret: a token in a `pipe:curl -H 'Authorization: …'` URL, a password in
`tracking.uri`. Loading records, per field, the field's text with each secret reference kept
as `${VAR}` (public ones resolved). From that record:

- `masked(tree)`: what may be printed, logged to MLflow or stored in checkpoints and job
  metadata: each secret reference shown as `***`;
- `templated(tree)`: what may be shipped to a cluster: secret references left as `${VAR}`, to
  be read again from the workers' environment (where the launcher puts them);
- `env`: VAR → value, for that environment.

URI userinfo (`scheme://user:password@host`) is stripped from every shown string, secret or not.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

MASK = "***"
_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# scheme://userinfo@ — the userinfo is everything up to the last '@' before the path.
# Greedy up to the last '@' before the path: a password may itself hold an '@'.
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/\s'\"]*@")
# Secret values shorter than this are not masked by value in free text (a secret "1" would
# turn every 1 into ***); they are still masked by field, which is what matters.
MIN_MASKED_VALUE = 4

Path_ = tuple[str, ...]


def strip_userinfo(text: str) -> str:
    """`http://alice:pw@host/x` → `http://host/x` (any scheme, anywhere in the text)."""
    return _USERINFO.sub(r"\1", text)


@dataclass
class SecretRefs:
    """What `load_job` learnt about a job's secret environment references."""

    templates: dict[Path_, str] = field(default_factory=dict)  # field path → text with ${VAR}
    env: dict[str, str] = field(default_factory=dict)  # VAR → value

    def __bool__(self) -> bool:
        return bool(self.templates)

    def drop(self, path: Path_) -> None:
        """A field overridden after interpolation (`--set`) no longer holds the reference;
        a variable no field refers to any more is no longer shipped to workers."""
        n = len(path)
        for key in [k for k in self.templates if k[:n] == path or path[:len(k)] == k]:
            del self.templates[key]
        used = {name for t in self.templates.values() for name in secret_names(t)}
        self.env = {k: v for k, v in self.env.items() if k in used}

    def mask_text(self, text: str) -> str:
        """Free text (an error message, a DeepSpeed config value) with every secret value
        replaced by ***, and URI userinfo stripped."""
        for value in sorted(self.env.values(), key=len, reverse=True):
            if len(value) >= MIN_MASKED_VALUE:
                text = text.replace(value, MASK)
        return strip_userinfo(text)

    def mask_tree(self, tree: Any) -> Any:
        """`mask_text` over every string of a JSON-like tree (keys too)."""
        if isinstance(tree, Mapping):
            return {self.mask_text(str(k)): self.mask_tree(v) for k, v in tree.items()}
        if isinstance(tree, (list, tuple)):
            return [self.mask_tree(v) for v in tree]
        return self.mask_text(tree) if isinstance(tree, str) else tree

    def masked(self, tree: dict[str, Any]) -> dict[str, Any]:
        """A dumped job (model_dump(mode="json")) safe to show: *** for each secret."""
        out = _with(tree, {p: _REF.sub(MASK, t) for p, t in self.templates.items()})
        return self.mask_tree(out)

    def templated(self, tree: dict[str, Any]) -> dict[str, Any]:
        """A dumped job safe to ship: each secret field back to its `${VAR}` text."""
        return _with(tree, self.templates)


def _with(tree: dict[str, Any], values: Mapping[Path_, str]) -> dict[str, Any]:
    """A copy of `tree` with the value at each path replaced (paths that no longer exist in
    the dump, e.g. a field the schema dropped, are skipped)."""
    import copy

    out = copy.deepcopy(tree)
    for path, value in values.items():
        node: Any = out
        for part in path[:-1]:
            node = node[int(part)] if isinstance(node, list) else node.get(part)
            if node is None:
                break
        else:
            last = path[-1]
            if isinstance(node, list) and int(last) < len(node):
                node[int(last)] = value
            elif isinstance(node, dict) and last in node:
                node[last] = value
    return out


def secret_names(template: str) -> Iterable[str]:
    return _REF.findall(template)


# Every secret value this process has read from the environment for a job: the CLI masks
# them in whatever error it prints, whichever module raised it.
_KNOWN: set[str] = set()


def remember(values: Iterable[str]) -> None:
    _KNOWN.update(v for v in values if len(v) >= MIN_MASKED_VALUE)


def mask_values(text: str, values: Iterable[str] = ()) -> str:
    """`text` with the given values, every remembered secret value and URI userinfo masked."""
    for value in sorted({*_KNOWN, *(v for v in values if len(v) >= MIN_MASKED_VALUE)},
                        key=len, reverse=True):
        text = text.replace(value, MASK)
    return strip_userinfo(text)
