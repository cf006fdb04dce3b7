"""`data verify`: each kind of damage is caught and its shard named; the CLI exits 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from typer.testing import CliRunner

from phmscale.cli.main import app
from phmscale.data.verify import verify, verify_or_raise
from phmscale.errors import InvalidInputError
from tests.data.helpers import cli, id_dataset


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    return id_dataset(tmp_path_factory.mktemp("verify") / "clean", [6, 6, 6, 6])


def _copy(clean: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(clean, tmp_path / "copy"))


def _problems(folder: Path) -> dict[str, list[str]]:
    reports, _ = verify(str(folder))
    return {Path(r.url).name: r.problems for r in reports if r.problems}


def test_clean_dataset_passes(clean: Path) -> None:
    reports, index = verify_or_raise(str(clean))
    assert len(reports) == 4 and sum(r.samples for r in reports) == 24
    assert all(r.sha256 == index["shards"][Path(r.url).name]["sha256"] for r in reports)
    shown = CliRunner().invoke(app, ["data", "verify", str(clean)])
    assert shown.exit_code == 0 and "all 4 shard(s) ok: 24 samples" in shown.stdout


def test_truncated_shard(clean: Path, tmp_path: Path) -> None:
    folder = _copy(clean, tmp_path)
    shard = folder / "train-000001.tar"
    shard.write_bytes(shard.read_bytes()[:5000])  # mid-member
    problems = _problems(folder)
    assert list(problems) == ["train-000001.tar"]
    assert any("tar error" in p or "truncated" in p for p in problems["train-000001.tar"])
    assert any("count" in p for p in problems["train-000001.tar"])


def test_truncated_at_a_member_boundary(clean: Path, tmp_path: Path) -> None:
    folder = _copy(clean, tmp_path)
    shard = folder / "train-000002.tar"
    shard.write_bytes(shard.read_bytes()[: 3 * 2048])  # 3 whole samples, no end marker
    problems = _problems(folder)["train-000002.tar"]
    assert any("end-of-archive" in p for p in problems), problems


def test_corrupt_byte_in_data_and_in_a_header(clean: Path, tmp_path: Path) -> None:
    folder = _copy(clean, tmp_path)
    data = bytearray((folder / "train-000000.tar").read_bytes())
    # Samples are 2048 bytes (.cls: header + block, .npy: header + block); sample 1's npy data
    # starts at 2048 + 1536 and its array after a 128-byte npy header: only the checksum sees it.
    data[2048 + 1536 + 130] ^= 0xFF
    (folder / "train-000000.tar").write_bytes(bytes(data))
    data = bytearray((folder / "train-000003.tar").read_bytes())
    data[2 * 2048 + 10] ^= 0xFF  # sample 2's first header: the tar reader stops there
    (folder / "train-000003.tar").write_bytes(bytes(data))
    problems = _problems(folder)
    assert any("sha256" in p for p in problems["train-000000.tar"])
    header = problems["train-000003.tar"]
    assert any("stopped early" in p for p in header) and any("count 2" in p for p in header)


def test_missing_key_and_non_adjacent_files(tmp_path: Path) -> None:
    with wds.TarWriter(str(tmp_path / "bad-0.tar")) as writer:
        for i in range(4):
            sample = {"__key__": f"s{i}", "npy": np.zeros(2, np.float32), "cls": i}
            if i == 2:
                del sample["cls"]
            writer.write(sample)
        writer.write({"__key__": "s0", "txt": "again"})  # s0's files split into two runs
    with pytest.raises(InvalidInputError) as error:
        verify_or_raise(str(tmp_path / "bad-0.tar"))
    text = str(error.value)
    assert "bad-0.tar" in text and "'s0': its files are not adjacent" in text
    assert "'s2' lacks .cls" in text


def test_checksum_disagreeing_with_the_index(clean: Path, tmp_path: Path) -> None:
    folder = _copy(clean, tmp_path)
    index = json.loads((folder / "shards.json").read_text())
    index["shards"]["train-000002.tar"]["sha256"] = "0" * 64
    index["shards"]["train-000002.tar"]["count"] = 7
    (folder / "shards.json").write_text(json.dumps(index))
    problems = _problems(folder)["train-000002.tar"]
    assert any(p.startswith("sha256") for p in problems)
    assert any(p.startswith("count 6 disagrees") for p in problems)


def test_cli_exits_2_naming_the_shard(clean: Path, tmp_path: Path) -> None:
    folder = _copy(clean, tmp_path)
    shard = folder / "train-000001.tar"
    shard.write_bytes(shard.read_bytes()[:5000])
    done = cli("data", "verify", str(folder))
    assert done.returncode == 2
    assert "train-000001.tar" in done.stderr and "Traceback" not in done.stderr
