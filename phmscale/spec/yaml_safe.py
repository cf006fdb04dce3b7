"""Reading a job file's bytes as YAML, safely: the data (as `yaml.safe_load` gives it) and the
line of every key path, or one `JobSpecError` saying what is wrong and where.

`yaml.safe_load` accepts things a job must not contain:
- recursive aliases (`a: &x [*x]`) build self-containing lists/dicts, which every later walk of
  the data (line map, ${ENV} interpolation, validation) would follow forever;
- alias bombs ("billion laughs": each anchor repeats the previous one 9 times) stay small as
  PyYAML objects (aliases share one object) but explode when walked as a tree;
- deep nesting exhausts Python's recursion limit in PyYAML's composer and in our walks.
So the document is composed into PyYAML's node graph first, that graph is checked with an
explicit stack (no recursion) for cycles, total size after alias expansion, and depth, and only
then are Python objects built from the very same nodes (no second parse).
"""

from __future__ import annotations

from typing import Any, NoReturn

import yaml

from phmscale.spec.problems import JobSpecError, Problem

Path_ = tuple[str, ...]

# Values (scalars and collections, counted once per place they appear after aliases are
# expanded). Shipped jobs have a few hundred; a 9-level alias bomb has hundreds of millions.
MAX_NODES = 100_000
# Nesting levels. Jobs need about 5; PyYAML's composer and our recursive walks (interpolation,
# pydantic) would hit Python's recursion limit somewhere past a few hundred.
MAX_DEPTH = 100


def compose_job_yaml(raw: bytes, source: str) -> tuple[Any, dict[Path_, int]]:
    """(data as `yaml.safe_load` would return it, {key path: 1-based line}) for a job file's
    bytes. Raises `JobSpecError` (exit 2, no traceback) naming `source` for binary input,
    YAML syntax errors, duplicate keys, recursive aliases, and documents too big or too deep."""
    text = _decode(raw, source)
    try:
        loader = _Loader(text)  # checks every character is one YAML allows
    except yaml.YAMLError as error:
        _fail(source, _yaml_problem(error, text))
    try:
        try:
            node = loader.get_single_node()
        except yaml.YAMLError as error:
            _fail(source, _yaml_problem(error, text))
        except RecursionError:  # PyYAML's composer recurses once per nesting level
            _fail(source, _problem("", f"the YAML is nested more than {MAX_DEPTH} levels "
                                       "deep: a job needs only a few levels", None))
        if node is None:  # an empty file, or only comments
            return None, {}
        _check_graph(node, loader.aliases, source)
        lines = _line_map(node, source)
        try:
            # Same loader, same nodes: what safe_load would build (merge keys, tags, timestamps).
            data = loader.construct_document(node)
        except yaml.YAMLError as error:  # unknown !tag, a list or mapping used as a key, …
            _fail(source, _yaml_problem(error, text))
    finally:
        loader.dispose()
    return data, lines


class _Loader(yaml.SafeLoader):
    """SafeLoader that remembers each alias (`*name`) it resolves: the composed graph keeps
    only the node an alias points to, and a good message needs the alias's own line."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.aliases: list[tuple[str, yaml.Mark, yaml.Node]] = []  # (anchor, where, target)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            target = super().compose_node(parent, index)
            self.aliases.append((event.anchor, event.start_mark, target))
            return target
        return super().compose_node(parent, index)


# -- errors ---------------------------------------------------------------------------------


def _problem(field: str, message: str, line: int | None) -> Problem:
    return Problem(field, message, line)


def _fail(source: str, *problems: Problem) -> NoReturn:
    raise JobSpecError(source, list(problems)) from None


def _decode(raw: bytes, source: str) -> str:
    """UTF-8 text, or a message that this is no text file (a .tar, a PNG, a checkpoint…)."""
    fix = "give the job's .yaml file, saved as UTF-8 text"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        _fail(source, _problem("", f"not a text YAML file: byte {error.start} is not UTF-8 "
                                   f"(is it a binary file such as an archive or image?); {fix}",
                               None))
    nul = raw.find(b"\0")  # valid UTF-8 but binary all the same (a tar header, for one)
    if nul >= 0:
        _fail(source, _problem("", f"not a text YAML file: it contains a NUL byte at byte "
                                   f"{nul} (a binary file?); {fix}", None))
    return text


def _yaml_problem(error: yaml.YAMLError, text: str) -> Any:
    """One Problem with the line for a PyYAML error."""
    if isinstance(error, yaml.reader.ReaderError):  # a control character: binary again
        line = text.count("\n", 0, error.position) + 1
        return _problem("", f"character #x{error.character:04x} is not allowed in YAML (a "
                            "binary file, or a stray control character?): remove it", line)
    mark = getattr(error, "problem_mark", None)
    line = mark.line + 1 if mark is not None else None
    what = getattr(error, "problem", None) or str(error)
    context = getattr(error, "context", None)
    if context and what.startswith("but "):  # "expected a single document …, but found …"
        what = f"{context}, {what}"
    if isinstance(error, yaml.constructor.ConstructorError):
        return _problem("", f"unsupported YAML value: {what} (job files hold plain "
                            "mappings, lists and scalars)", line)
    return _problem("", f"YAML syntax error: {what} (check indentation and quoting)", line)


# -- the node graph -------------------------------------------------------------------------


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]  # keys are nodes too (`? [a]: 1`)
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_graph(root: yaml.Node, aliases: list[tuple[str, yaml.Mark, yaml.Node]],
                 source: str) -> None:
    """Refuse a cycle, more than MAX_NODES values after alias expansion, or more than
    MAX_DEPTH levels — before any walk that expands aliases. Depth-first over distinct nodes
    with an explicit stack; each node's expanded size is computed once (memoized), so even a
    bomb of 10**9 values costs a few dozen steps."""
    size: dict[int, int] = {}  # id(node) → values in its subtree, aliases expanded
    on_path = {id(root)}  # nodes being visited: meeting one again is a cycle
    stack = [(root, iter(_children(root)))]
    while stack:
        node, pending = stack[-1]
        child = next(pending, None)
        if child is None:  # all children done: this node's size is known
            stack.pop()
            on_path.discard(id(node))
            size[id(node)] = 1 + sum(size[id(c)] for c in _children(node))
            if size[id(node)] > MAX_NODES:
                _fail(source, _problem(
                    "", f"this value expands to more than {MAX_NODES} values through "
                        "aliases (*name) — an alias bomb? A job needs far fewer: write the "
                        "values out or use fewer aliases", node.start_mark.line + 1))
        elif id(child) in on_path:
            _fail(source, _recursive(child, aliases))
        elif id(child) not in size:  # not seen yet (seen ones are done or on the path)
            if len(stack) >= MAX_DEPTH:
                _fail(source, _problem("", f"the YAML is nested more than {MAX_DEPTH} levels "
                                           "deep: a job needs only a few levels",
                                       child.start_mark.line + 1))
            on_path.add(id(child))
            stack.append((child, iter(_children(child))))


def _recursive(target: yaml.Node, aliases: list[tuple[str, yaml.Mark, yaml.Node]]) -> Any:
    """The problem for a cycle back to `target`: name the alias written inside it."""
    start, end = target.start_mark.index, target.end_mark.index
    inside = [(name, mark) for name, mark, node in aliases
              if node is target and start <= mark.index < end]
    if inside:
        name, mark = inside[0]
        return _problem("", f"alias *{name} refers to the value anchored &{name} (line "
                            f"{target.start_mark.line + 1}) that contains it: aliases may not "
                            "refer to themselves; write the value out instead", mark.line + 1)
    return _problem("", "an alias refers to a value that contains it: aliases may not refer "
                        "to themselves", target.start_mark.line + 1)


def _line_map(root: yaml.Node, source: str) -> dict[Path_, int]:
    """Map each key path to its 1-based line; refuse duplicate keys (PyYAML keeps the last one
    silently). Call after `_check_graph`: the walk expands aliases, which is then bounded."""
    lines: dict[Path_, int] = {}
    duplicates: list[Any] = []
    reported: set[int] = set()  # an aliased mapping is walked once per alias: report once
    stack: list[tuple[yaml.Node, Path_]] = [(root, ())]
    while stack:
        node, prefix = stack.pop()
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in node.value:
                key = str(key_node.value)
                path = (*prefix, key)
                if key in seen:
                    if id(key_node) not in reported:
                        reported.add(id(key_node))
                        duplicates.append(_problem(".".join(path), "duplicate key: remove one "
                                                   "of them", key_node.start_mark.line + 1))
                    continue
                seen.add(key)
                lines[path] = key_node.start_mark.line + 1
                stack.append((value_node, path))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[(*prefix, str(i))] = item.start_mark.line + 1
                stack.append((item, (*prefix, str(i))))
    if duplicates:
        _fail(source, *duplicates)
    return lines
