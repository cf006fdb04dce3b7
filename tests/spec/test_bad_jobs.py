"""Every file in bad_jobs/ is rejected by the real CLI with exit 2, a message naming the field
or line (the `# expect:` comment on its first line), and no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli

BAD = sorted((Path(__file__).parent / "bad_jobs").glob("*.yaml"))


def _expected(path: Path) -> str | None:
    first = path.read_text().splitlines()[:1]
    if first and first[0].startswith("# expect:"):
        return first[0].removeprefix("# expect:").strip()
    return None


def test_corpus_is_large_enough():
    assert len(BAD) >= 25


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_job_rejected(path: Path):
    result = run_cli("validate", str(path.relative_to(ROOT)))
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    assert "Traceback" not in out
    assert str(path.relative_to(ROOT)) in result.stderr  # the file is named
    expected = _expected(path)
    if expected is None:  # the empty file
        assert "empty" in result.stderr
    else:
        assert expected in result.stderr, result.stderr


def test_missing_job_file():
    result = run_cli("validate", "jobs/does-not-exist.yaml")
    assert result.returncode == 2
    assert "no such file" in result.stderr
    assert "Traceback" not in result.stderr


def test_field_errors_carry_the_yaml_line():
    result = run_cli("validate", "tests/spec/bad_jobs/unknown_train_key.yaml")
    assert "unknown_train_key.yaml:4: train.stepz" in result.stderr


def test_bad_override_through_cli():
    result = run_cli("validate", "jobs/quickstart.yaml", "--set", "train.stepz=3")
    assert result.returncode == 2
    assert "did you mean `train.steps`" in result.stderr


def test_binary_file_and_bad_override_values(tmp_path):
    """Not a text file, and a `--set` value holding a recursive alias: exit 2, a message."""
    binary = tmp_path / "shards.yaml"
    binary.write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(256)))  # a gzip'd tar, say
    result = run_cli("validate", str(binary))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "not a text YAML file" in result.stderr and str(binary) in result.stderr
    result = run_cli("validate", "jobs/quickstart.yaml", "--set", "train.deepspeed=&x {a: *x}")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "--set train.deepspeed" in result.stderr and "refer to themselves" in result.stderr
