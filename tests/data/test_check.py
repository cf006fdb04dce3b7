"""check_data: validate-time problems, each naming the field, the pattern and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from phmscale.data import check_data
from tests.data.helpers import id_dataset, spec


@pytest.fixture(scope="module")
def four(tmp_path_factory) -> Path:
    return id_dataset(tmp_path_factory.mktemp("check") / "four", [4, 4, 4, 4])


def test_enough_shards_passes(four: Path) -> None:
    assert check_data(spec(str(four / "train-{000000..000003}.tar"), loader_workers=2),
                      world_size=2) == []


def test_too_few_shards_for_ranks_times_workers(four: Path) -> None:
    pattern = str(four / "train-{000000..000003}.tar")
    [problem] = check_data(spec(pattern, loader_workers=2), world_size=4)
    assert problem.startswith("data.train:") and pattern in problem
    assert "4 shard(s)" in problem and "need at least 8" in problem and "--shards 8" in problem
    assert check_data(spec(pattern, loader_workers=2, resampled=True), world_size=4) == []
    # loader_workers 0 counts as one reader per rank; world_size defaults to resources.workers
    assert check_data(spec(pattern, loader_workers=0), world_size=4) == []


def test_val_needs_a_shard_per_rank(four: Path) -> None:
    s = spec(str(four), str(four / "train-000000.tar"), loader_workers=1)
    [problem] = check_data(s, world_size=2)
    assert problem.startswith("data.val:") and "need at least 2" in problem


def test_missing_paths_are_named(tmp_path: Path, four: Path) -> None:
    [problem] = check_data(spec(str(tmp_path / "nope-{000..003}.tar")), world_size=1)
    assert problem.startswith("data.train:") and "nope-{000..003}.tar" in problem
    assert "matches no files" in problem and "phmscale data pack" in problem
    [problem] = check_data(spec(str(tmp_path / "*.tar")), world_size=1)
    assert "matches no files" in problem
    [problem] = check_data(spec(str(four / "train-{000000..000009}.tar"), loader_workers=1),
                           world_size=1)
    assert "6 of 10 shard(s)" in problem and "train-000004.tar" in problem


def test_builtins_unknown_and_unpacked(tmp_path: Path) -> None:
    [problem] = check_data(spec("builtin:imagenet", cache_dir=str(tmp_path)), world_size=1)
    assert problem.startswith("data.train:") and "builtin:digits, builtin:mnist1d" in problem
    digits = spec("builtin:digits", "builtin:digits", cache_dir=str(tmp_path / "empty"),
                  model={"input_shape": [1, 8, 8], "patch_size": 2})
    assert check_data(digits, world_size=4) == []  # not packed yet: fine (8 shards to come)
    assert not (tmp_path / "empty").exists()  # and checking packed nothing
    assert "need at least 16" in check_data(digits, world_size=8)[0]


def test_bad_brace_pattern(four: Path) -> None:
    [problem] = check_data(spec(str(four / "train-{000000..000003.tar")), world_size=1)
    assert problem.startswith("data.train:") and "brace" in problem


def test_data_that_does_not_fit_the_model(four: Path) -> None:
    [problem] = check_data(spec(str(four), model={"input_shape": [1, 8, 8], "patch_size": 2},
                                loader_workers=1), world_size=1)
    assert "model.input_shape: [1, 4]" in problem
    lm = spec("builtin:pystdlib", model={"task": "causal_lm", "seq_len": 1024}, loader_workers=1)
    assert "--chunk-len 1025" in check_data(lm, world_size=1)[0]
