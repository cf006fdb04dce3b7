"""compose_job_yaml: what safe_load gives plus key lines, and a clear JobSpecError (exit 2)
for binary files, recursive aliases, alias bombs, deep nesting, syntax errors, duplicates."""

from __future__ import annotations

import io
import tarfile
import time
from pathlib import Path

import pytest
import yaml

from phmscale.errors import InvalidInputError
from phmscale.spec import JobSpecError
from phmscale.spec.yaml_safe import MAX_DEPTH, MAX_NODES, compose_job_yaml
from tests.conftest import JOBS


def _error(raw: bytes, source: str = "job.yaml") -> JobSpecError:
    with pytest.raises(JobSpecError) as info:
        compose_job_yaml(raw, source)
    error = info.value
    assert isinstance(error, InvalidInputError) and error.exit_code == 2
    assert source in str(error)
    return error


def _one_problem(raw: bytes):
    (problem,) = _error(raw).problems
    return problem


# -- what it returns --------------------------------------------------------------------------


@pytest.mark.parametrize("job", JOBS, ids=[j.stem for j in JOBS])
def test_shipped_jobs_parse_as_safe_load_does(job: Path):
    raw = job.read_bytes()
    data, lines = compose_job_yaml(raw, str(job))
    assert data == yaml.safe_load(raw.decode("utf-8"))
    assert lines[("name",)] == next(i for i, text in enumerate(raw.decode().splitlines(), 1)
                                    if text.startswith("name:"))


def test_line_map_covers_nested_keys_list_items_and_aliases():
    raw = b"name: t\ndata:\n  train: &t builtin:digits\n  eval: *t\nlist:\n  - a\n  - b: 1\n"
    data, lines = compose_job_yaml(raw, "job.yaml")
    assert data == {"name": "t", "data": {"train": "builtin:digits", "eval": "builtin:digits"},
                    "list": ["a", {"b": 1}]}
    assert lines == {("name",): 1, ("data",): 2, ("data", "train"): 3, ("data", "eval"): 4,
                     ("list",): 5, ("list", "0"): 6, ("list", "1"): 7, ("list", "1", "b"): 7}


def test_merge_keys_and_shared_aliases_still_work():
    raw = b"base: &b {x: 1, y: [1, 2]}\nd:\n  <<: *b\n  z: 3\ne: *b\n"
    data, _ = compose_job_yaml(raw, "job.yaml")
    assert data == yaml.safe_load(raw)
    assert data["d"] == {"x": 1, "y": [1, 2], "z": 3}


@pytest.mark.parametrize("raw", [b"", b"# only a comment\n", b"\xef\xbb\xbf"])
def test_empty_document_is_none(raw: bytes):
    assert compose_job_yaml(raw, "job.yaml") == (None, {})


# -- binary input -------------------------------------------------------------------------------


def test_png_is_not_a_text_yaml_file():
    problem = _one_problem(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    assert "not a text YAML file" in problem.message and "byte 0" in problem.message


def test_invalid_utf8_names_the_byte_offset():
    problem = _one_problem(b"name: caf\xe9\n")  # latin-1 é
    assert "not a text YAML file: byte 9 is not UTF-8" in problem.message


def test_tar_archive_is_not_a_text_yaml_file():
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        body = b"name: t\n"
        info = tarfile.TarInfo("job.yaml")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    problem = _one_problem(buffer.getvalue())
    assert "not a text YAML file" in problem.message and "NUL byte at byte 8" in problem.message


def test_nul_in_otherwise_valid_text_counts_as_binary():
    problem = _one_problem(b"name: t\x00\n")
    assert "NUL byte at byte 7" in problem.message


def test_control_character_names_its_line():
    problem = _one_problem(b"name: t\nx: \x01\n")
    assert problem.line == 2 and "#x0001 is not allowed" in problem.message


# -- aliases ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, line",
    [
        (b"a: &x [*x]\n", 1),
        (b"name: t\na: &x\n  b: *x\n", 3),
        (b"a: &x\n  - 1\n  - [2, *x]\n", 3),
        (b"a: &x {b: {c: *x}}\n", 1),
        (b"a: &x\n  <<: *x\n", 2),
    ],
)
def test_recursive_alias_is_refused_with_its_line(raw: bytes, line: int):
    problem = _one_problem(raw)
    assert problem.line == line
    assert "aliases may not refer to themselves" in problem.message
    assert "*x" in problem.message


def _billion_laughs(levels: int) -> bytes:
    rows = ['l0: &l0 "lol"']
    for i in range(1, levels + 1):
        rows.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return ("\n".join(rows) + "\n").encode()


def test_alias_bomb_is_refused_quickly():
    start = time.perf_counter()
    problem = _one_problem(_billion_laughs(9))
    assert time.perf_counter() - start < 1.0
    assert f"more than {MAX_NODES} values" in problem.message and "alias" in problem.message
    assert problem.line is not None


def test_modest_alias_reuse_is_fine():
    data, _ = compose_job_yaml(_billion_laughs(3), "job.yaml")  # 9**3 = 729 leaves
    assert len(data["l3"]) == 9 and data["l3"][0][0][0] == "lol"


def test_undefined_alias_is_a_syntax_error():
    problem = _one_problem(b"name: t\nx: *nope\n")
    assert problem.line == 2 and "undefined alias 'nope'" in problem.message


# -- nesting, syntax, duplicates ------------------------------------------------------------------


@pytest.mark.parametrize("levels", [MAX_DEPTH + 10, 2000])
def test_deep_nesting_is_refused(levels: int):
    problem = _one_problem(b"a: " + b"[" * levels + b"]" * levels + b"\n")
    assert f"nested more than {MAX_DEPTH} levels" in problem.message


def test_syntax_error_names_the_line():
    problem = _one_problem(b"name: t\nmodel:\n  depth: [1, 2\n")
    assert problem.line == 4
    assert problem.message.startswith("YAML syntax error:")


def test_two_documents_are_refused():
    problem = _one_problem(b"name: t\n---\nname: u\n")
    assert "expected a single document" in problem.message and problem.line == 2


def test_unknown_tag_is_refused():
    problem = _one_problem(b"name: !!python/object:os.system t\n")
    assert problem.line == 1 and "could not determine a constructor" in problem.message


def test_every_duplicate_key_is_reported():
    error = _error(b"name: t\nmodel:\n  depth: 1\n  depth: 2\nname: u\n")
    found = {(p.field, p.line) for p in error.problems}
    assert found == {("model.depth", 4), ("name", 5)}
    assert all("duplicate key" in p.message for p in error.problems)
