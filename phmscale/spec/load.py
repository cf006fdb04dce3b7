"""Loading a job file: YAML → ${ENV} interpolation → --set overrides → JobSpec.

Every failure becomes one `JobSpecError` listing problems that each name the file, the dotted
field path, the YAML line where known, and what would fix it. No caller sees a traceback.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Tag, ValidationError

from phmscale.spec.job import JobSpec
from phmscale.spec.problems import JobSpecError, Problem
from phmscale.spec.secrets import SecretRefs, remember
from phmscale.spec.yaml_safe import compose_job_yaml

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

Path_ = tuple[str, ...]


# -- YAML with line numbers --------------------------------------------------------------


def _line_for(lines: dict[Path_, int], loc: Sequence[Any]) -> int | None:
    """The line of the deepest existing prefix of a field path."""
    path = tuple(str(p) for p in loc)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return None


# -- schema walking (unknown keys, did-you-mean) -------------------------------------------


Member = tuple[str | None, type[BaseModel]]


def _members(annotation: Any) -> list[Member]:
    """The models an annotation holds, each with its tag in a discriminated union (None
    elsewhere): `ModelSpec` → [("phm_transformer", TransformerSpec), ("resnet", ResNetSpec)],
    `TrainSpec` or `TrainSpec | None` → [(None, TrainSpec)], a scalar → []."""
    if typing.get_origin(annotation) is typing.Annotated:
        inner, *meta = typing.get_args(annotation)
        tag = next((m.tag for m in meta if isinstance(m, Tag)), None)
        return [(tag if t is None else t, c) for t, c in _members(inner)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [(None, annotation)]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return [m for arg in typing.get_args(annotation) for m in _members(arg)]
    return []


def _is_mapping(annotation: Any) -> bool:
    return typing.get_origin(annotation) is dict or annotation is dict


def _resolve(path: Sequence[str]) -> tuple[list[str], str | None]:
    """Walk a dotted path through the spec's models; through a union (the model kinds) a key
    of any member is valid here, and validation then says which kind it belongs to.

    Returns (the valid names at the first unknown part, that unknown part), or ([], None) when
    the whole path is valid.
    """
    models: list[type[BaseModel]] | None = [JobSpec]
    for i, part in enumerate(path):
        if models is None:  # inside a free-form mapping such as train.deepspeed
            return [], None
        fields = {name: info for m in models for name, info in m.model_fields.items()}
        if part not in fields:
            return [".".join((*path[:i], f)) for f in fields], part
        annotations = [m.model_fields[part].annotation for m in models if part in m.model_fields]
        subs = [c for a in annotations for _, c in _members(a)]
        if subs:
            models = subs
        elif any(_is_mapping(a) for a in annotations):
            models = None
        elif i < len(path) - 1:
            return [], path[i + 1]  # a scalar field has no sub-keys
    return [], None


@dataclasses.dataclass
class _Located:
    """An error's location with pydantic's union tags taken out (`model.resnet.dim` →
    `model.dim`), and what the tags said."""

    loc: list[str]
    owner: type[BaseModel] | None  # the model holding the last part
    kind: str | None = None  # the union member chosen, e.g. "resnet"
    siblings: list[Member] = dataclasses.field(default_factory=list)  # all members there


def _locate(loc: Sequence[Any], root: type[BaseModel]) -> _Located:
    found = _Located([], None)
    members: list[Member] = [(None, root)]
    for part in (str(p) for p in loc):
        tagged = {t: c for t, c in members if t is not None}
        if part in tagged:
            found.kind, found.siblings = part, members
            members = [(None, tagged[part])]
            continue
        found.loc.append(part)
        found.owner = members[0][1] if len(members) == 1 else None
        annotations = [c.model_fields[part].annotation for _, c in members
                       if part in c.model_fields]
        members = [m for a in annotations for m in _members(a)]
    return found


def _kind_specific(where: _Located) -> bool:
    """Whether the last field's type differs between the union's members (`task` is narrower
    for a ResNet), so an error in it is worth naming the kind."""
    name = where.loc[-1] if where.loc else ""
    infos = [c.model_fields[name] for _, c in where.siblings if name in c.model_fields]
    return len({(repr(i.annotation), repr(i.metadata)) for i in infos}) > 1


def _wrong_kind(where: _Located) -> str | None:
    """The message for a key of another union member (a ResNet field in a transformer job)."""
    name = where.loc[-1]
    others = [t for t, c in where.siblings if t != where.kind and name in c.model_fields]
    if not others or where.kind is None:
        return None
    field = ".".join(where.loc[:-1] + ["kind"])
    return (f"`{name}` belongs to kind {' / '.join(repr(o) for o in others)}, not to this "
            f"model's kind '{where.kind}': remove it, or set {field}: {others[0]}")


def _suggest(bad: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(bad, candidates, n=1, cutoff=0.5)
    if not close:  # compare last parts too: `model.dpth` → `model.depth`
        tails = {c.rsplit(".", 1)[-1]: c for c in candidates}
        hit = difflib.get_close_matches(bad.rsplit(".", 1)[-1], list(tails), n=1, cutoff=0.5)
        close = [tails[hit[0]]] if hit else []
    if close:
        return f"did you mean `{close[0]}`?"
    if candidates:
        return "valid keys here: " + ", ".join(f"`{c.rsplit('.', 1)[-1]}`" for c in candidates)
    return "this field takes no sub-keys"


# -- environment interpolation -----------------------------------------------------------


def _interpolate(value: Any, loc: Path_, problems: list[Problem], lines: dict[Path_, int],
                 public: frozenset[str] = frozenset(), refs: SecretRefs | None = None) -> Any:
    """Resolve ${VAR} references. A variable not in `public` is a secret: `refs` records the
    field's text with that reference kept (see `phmscale.spec.secrets`)."""
    if isinstance(value, dict):
        return {k: _interpolate(v, (*loc, str(k)), problems, lines, public, refs)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, (*loc, str(i)), problems, lines, public, refs)
                for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value
    secret = False

    def sub(match: re.Match[str], keep_secrets: bool = False) -> str:
        nonlocal secret
        var, default = match.group(1), match.group(2)
        if var in os.environ:
            if var not in public:
                secret = True
                if refs is not None and not keep_secrets:
                    refs.env[var] = os.environ[var]
                    remember([os.environ[var]])
                if keep_secrets:
                    return f"${{{var}}}"
            return os.environ[var]
        if default is not None:  # a default written in the file is no secret
            return default
        if not keep_secrets:
            problems.append(
                Problem(
                    ".".join(loc),
                    f"environment variable ${{{var}}} is not set: export {var}=… or write "
                    f"${{{var}:-default}}",
                    _line_for(lines, loc),
                )
            )
        return match.group(0)

    out = _ENV_REF.sub(sub, value)
    if secret and refs is not None:
        refs.templates[loc] = _ENV_REF.sub(lambda m: sub(m, keep_secrets=True), value)
    if _ENV_REF.fullmatch(value):  # a whole-value reference takes the type its text reads as
        try:
            typed = yaml.safe_load(out)
        except yaml.YAMLError:
            return out
        return typed if isinstance(typed, (int, float, bool, str)) else out
    return out


def _public_env(data: dict[str, Any]) -> frozenset[str]:
    """The job's `public_env` list, read before interpolation (it names variables, it does
    not use them); a malformed one is left for validation to report."""
    names = data.get("public_env")
    if isinstance(names, list):
        return frozenset(str(n) for n in names)
    return frozenset()


# -- overrides ---------------------------------------------------------------------------


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` → (["a","b","c"], typed value). Values read as YAML scalars/lists."""
    if "=" not in text:
        raise JobSpecError(
            "--set", [Problem("", f"override {text!r} must look like key.path=value")]
        )
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".")]
    if not all(parts):
        raise JobSpecError("--set", [Problem(key, "empty part in the key path")])
    return parts, _override_value(key.strip(), raw)


def _override_value(key: str, raw: str) -> Any:
    """The value as YAML reads it, under the same bounds as a job file (no recursive alias,
    no alias bomb); text that is not YAML at all stays the text itself."""
    if not raw.strip():
        return ""
    try:
        return compose_job_yaml(raw.encode(), f"--set {key}")[0]
    except JobSpecError:
        try:
            yaml.safe_load(raw)
        except yaml.YAMLError:
            return raw  # `--set name=a: b` and the like: the text as written
        except RecursionError:
            pass
        raise  # YAML a job must not hold: its own message says what and where


def apply_overrides(data: dict[str, Any], overrides: Iterable[str],
                    refs: SecretRefs | None = None) -> list[Problem]:
    """Set each override into the raw job mapping; unknown paths become problems. An
    overridden field no longer holds the secret reference `refs` recorded for it."""
    problems: list[Problem] = []
    for text in overrides:
        parts, value = parse_override(text)
        candidates, bad = _resolve(parts)
        if bad is not None:
            dotted = ".".join(parts)
            problems.append(
                Problem(dotted, f"--set {dotted}: unknown field; {_suggest(dotted, candidates)}")
            )
            continue
        node = data
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
        if refs is not None:
            refs.drop(tuple(parts))
    return problems


# -- validation errors ---------------------------------------------------------------------


def _problems_from(error: ValidationError, lines: dict[Path_, int],
                   root: type[BaseModel] = JobSpec) -> list[Problem]:
    """One problem per pydantic error of validating `root` (a job, or a sweep file's section)."""
    problems = []
    for err in error.errors():
        where = _locate(err["loc"], root)
        loc = where.loc
        dotted = ".".join(loc) or "(top level)"
        kind = err["type"]
        if kind == "extra_forbidden":
            owner_fields = list(where.owner.model_fields) if where.owner is not None else []
            candidates = [".".join((*loc[:-1], f)) for f in owner_fields]
            msg = _wrong_kind(where) or f"unknown key; {_suggest(dotted, candidates)}"
        elif kind == "missing":
            msg = "required field is missing"
        elif kind == "value_error":
            msg = str(err["msg"]).removeprefix("Value error, ")
        elif kind == "union_tag_invalid":  # a discriminated union's tag: the model's `kind`
            loc = [*loc, "kind"]
            dotted = ".".join(loc)
            tags = re.findall(r"'([^']*)'", err["ctx"]["expected_tags"])
            close = difflib.get_close_matches(str(err["ctx"]["tag"]), tags, n=1, cutoff=0.5)
            hint = f"did you mean `{close[0]}`?" if close else "valid kinds: " + ", ".join(
                f"`{t}`" for t in tags)
            msg = f"unknown kind {err['ctx']['tag']!r}; {hint}"
        else:
            got = err.get("input")
            shown = repr(got) if not isinstance(got, dict) else "a mapping"
            msg = f"{err['msg']} (got {shown})"
            if where.kind is not None and _kind_specific(where):
                msg += f" for kind '{where.kind}'"
        problems.append(Problem(dotted if loc else "", msg, _line_for(lines, loc)))
    return problems


# -- entry points --------------------------------------------------------------------------


def load_job_dict(
    data: Any, overrides: Iterable[str] = (), source: str = "<job>",
    lines: dict[Path_, int] | None = None,
) -> JobSpec:
    """Validate an already-parsed job mapping (with overrides) into a JobSpec."""
    lines = lines or {}
    if data is None:
        raise JobSpecError(
            source, [Problem("", "the job is empty: it needs at least `name` and `data.train`")]
        )
    if not isinstance(data, dict):
        raise JobSpecError(
            source,
            [Problem("", f"the top level must be a mapping of sections (name, model, data, …), "
                         f"got a {type(data).__name__}", 1)],
        )
    problems: list[Problem] = []
    refs = SecretRefs()
    data = _interpolate(data, (), problems, lines, _public_env(data), refs)
    problems += apply_overrides(data, overrides, refs)
    if not problems:
        try:
            spec = JobSpec.model_validate(data)
        except ValidationError as error:
            problems = _problems_from(error, lines)
        else:
            spec.attach_secrets(refs)
            return spec
    # A message may quote the value it rejects: never a secret one.
    raise JobSpecError(source, [Problem(p.field, refs.mask_text(p.message), p.line)
                                for p in problems])


def load_job(path: str | os.PathLike[str], overrides: Iterable[str] = ()) -> JobSpec:
    """Load, interpolate, override and validate a YAML job file."""
    source = str(path)
    file = Path(path)
    if not file.is_file():
        hint = "it is a directory" if file.is_dir() else "no such file"
        raise JobSpecError(source, [Problem("", f"cannot read the job file: {hint}")])
    try:
        raw = file.read_bytes()
    except OSError as error:  # e.g. permission denied
        raise JobSpecError(
            source, [Problem("", f"cannot read the job file: {error.strerror or error}")]
        ) from None
    data, lines = compose_job_yaml(raw, source)
    return load_job_dict(data, overrides, source, lines)


def job_schema() -> dict[str, Any]:
    """The JSON schema of a job file (for editors: yaml-language-server, VS Code)."""
    schema = JobSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "phmscale job"
    return schema


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return " | ".join(str(a) for a in typing.get_args(annotation))
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def reference_markdown() -> str:
    """The job spec reference as a Markdown table (README's reference is this text, checked by
    a test): one row per field, dotted path, type, default, description. A union's members
    (the model kinds) share one list: a field the kinds share appears once, and the description
    of a field only some kinds take starts with those kinds."""
    rows = ["| field | type | default | description |", "|---|---|---|---|"]

    def walk(members: list[Member], prefix: str) -> None:
        seen: set[str] = set()
        for _, model in members:
            for name, info in model.model_fields.items():
                if name in seen:
                    continue
                seen.add(name)
                path = f"{prefix}{name}"
                subs = _members(info.annotation)
                if subs:
                    walk(subs, path + ".")
                    continue
                owners = [t for t, m in members if name in m.model_fields]
                only = f"*{', '.join(owners)} only.* " if len(owners) < len(members) else ""
                # A field the kinds narrow differently (`kind`, `task`) lists every value.
                shared = [m.model_fields[name].annotation for _, m in members
                          if name in m.model_fields]
                if all(typing.get_origin(a) is typing.Literal for a in shared):
                    values = dict.fromkeys(v for a in shared for v in typing.get_args(a))
                    annotation: Any = typing.Literal[tuple(values)]
                else:
                    annotation = info.annotation
                kind = _type_name(annotation).replace("|", "\\|")
                if info.is_required():
                    default = "**required**"
                else:
                    value = info.get_default(call_default_factory=True)
                    default = f"`{value}`" if value not in (None, {}, []) else f"`{value!r}`"
                rows.append(f"| `{path}` | {kind} | {default} | {only}{info.description or ''} |")

    walk([(None, JobSpec)], "")
    return "\n".join(rows) + "\n"
