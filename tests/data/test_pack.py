"""Packing every source format and the built-ins; read back by an independent reader."""

from __future__ import annotations

import gzip
import io
import json
import multiprocessing
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image
from typer.testing import CliRunner

from phmscale.cli.main import app
from phmscale.data import builtin_source, ensure_builtin, make_loader, open_source, pack
from phmscale.data.builtins import BUILTIN_DATASETS, BUILTIN_SHARDS, builtin_dir
from phmscale.data.packer import shard_sizes
from phmscale.errors import InvalidInputError
from tests.data.helpers import cli, npz_file, spec


def _plain_read(folder: Path) -> dict[str, list[dict]]:
    """Every split's samples, read with plain webdataset.WebDataset (not our loader)."""
    index = json.loads((folder / "shards.json").read_text())
    out = {}
    for split, entry in index["splits"].items():
        urls = [str(folder / s) for s in entry["shards"]]
        out[split] = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))
        assert len(out[split]) == entry["count"] == sum(
            index["shards"][s]["count"] for s in entry["shards"])
    return out


# -- tiny sources in each format -------------------------------------------------------------


def _cifar(root: Path) -> Path:
    root.mkdir()
    rng = np.random.default_rng(1)
    for name, n in (("data_batch_1", 12), ("test_batch", 6)):
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": list(rng.integers(0, 10, n))}
        (root / name).write_bytes(pickle.dumps(batch))
    names = [f"c{i}".encode() for i in range(10)]
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}))
    return root


def _idx(path: Path, arr: np.ndarray, gz: bool) -> None:
    raw = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    raw += arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


def _mnist(root: Path) -> Path:
    root.mkdir()
    rng = np.random.default_rng(2)
    for prefix, n in (("train", 10), ("t10k", 5)):
        _idx(root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 6, 6)), gz=True)
        _idx(root / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n), gz=False)
    return root


def _images(root: Path) -> Path:
    rng = np.random.default_rng(3)
    for split, n in (("train", 3), ("val", 2)):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i}.png")
    return root


def _text(root: Path) -> Path:
    root.mkdir()
    (root / "a.txt").write_bytes(b"hello world, " * 20)
    (root / "b.txt").write_bytes(bytes(range(200)))
    return root


FORMATS = {
    # format: (builder, expected (train, val) counts, input keys, model overrides)
    "cifar": (_cifar, (12, 6), {"npy", "cls"}, {"input_shape": [3, 32, 32], "patch_size": 4}),
    "mnist-idx": (_mnist, (10, 5), {"npy", "cls"}, {"input_shape": [1, 6, 6], "patch_size": 2}),
    "image-folder": (_images, (6, 4), {"png", "cls"}, {"input_shape": [3, 6, 6], "patch_size": 2}),
    "npz": (lambda p: npz_file(p.with_suffix(".npz")), (36, 4), {"npy", "cls"}, {}),
    "text": (_text, (10, 1), {"bin"}, {"task": "causal_lm", "seq_len": 31}),
}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_format_packs_and_reads_back(tmp_path: Path, fmt: str) -> None:
    build, (n_train, n_val), keys, model = FORMATS[fmt]
    src = build(tmp_path / "src")
    from phmscale.data import detect_format

    assert detect_format(src) == fmt
    source = open_source(fmt, src, split=None, seed=0, chunk_len=40)
    index = pack(source, tmp_path / "out", shard_size=4, progress=False)
    assert index["dataset"]["task"] == source.task
    samples = _plain_read(tmp_path / "out")
    assert (len(samples["train"]), len(samples["val"])) == (n_train, n_val)
    for sample in samples["train"]:
        assert set(k for k in sample if not k.startswith("__")) == keys
    val = str(tmp_path / "out") if n_val >= 1 else None
    loader = make_loader(spec(str(tmp_path / "out"), val, model=model, loader_workers=0,
                              batch_size=2), "train")
    x, y = next(iter(loader.iterate(0)))
    if source.task == "classify":
        assert x.shape == (2, *model.get("input_shape", [1, 4])) and x.dtype == torch.float32
        assert y.dtype == torch.int64
        stats = index["dataset"].get("mean"), index["dataset"].get("std")
        if index["dataset"]["dtype"] != "uint8":  # float arrays are taken as they are
            assert stats == (None, None) and 0 <= float(x.min()) and float(x.max()) <= 1
        else:  # pixels: scaled to [0, 1], then normalized by the statistics recorded at pack
            mean, std = (torch.tensor(s).view(1, -1, *[1] * (x.dim() - 2)) for s in stats)
            raw = x * std + mean
            assert -1e-5 <= float(raw.min()) and float(raw.max()) <= 1 + 1e-5
    else:
        assert x.shape == (2, 31) and torch.equal(x[:, 1:], y[:, :-1])


def test_cifar_pixels_and_labels_survive(tmp_path: Path) -> None:
    src = _cifar(tmp_path / "src")
    pack(open_source("cifar", src, split=None, seed=0, chunk_len=40), tmp_path / "out",
         progress=False)
    batch = pickle.loads((src / "test_batch").read_bytes())
    rows = zip(batch[b"data"], batch[b"labels"], strict=True)
    want = {(bytes(row), int(lab)) for row, lab in rows}
    got = {(np.load(io.BytesIO(s["npy"])).tobytes(), int(s["cls"]))
           for s in _plain_read(tmp_path / "out")["val"]}
    assert got == want
    index = json.loads((tmp_path / "out" / "shards.json").read_text())
    assert index["dataset"]["classes"][:2] == ["c0", "c1"]
    assert index["dataset"]["shape"] == [3, 32, 32] and index["dataset"]["num_classes"] == 10


def test_pack_is_deterministic(tmp_path: Path) -> None:
    src = npz_file(tmp_path / "a.npz", 50)
    for name, seed in (("one", 0), ("two", 0), ("three", 1)):
        pack(open_source("npz", src, split="train=0.8,val=0.2", seed=seed, chunk_len=40),
             tmp_path / name, shards=3, seed=seed, progress=False)
    files = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "two").iterdir())
    for f in files:
        assert (tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes(), f
    assert (tmp_path / "one" / "train-000000.tar").read_bytes() != (
        tmp_path / "three" / "train-000000.tar").read_bytes()


def test_shard_sizes_are_balanced() -> None:
    assert shard_sizes(10, shards=4) == [3, 3, 2, 2]
    assert shard_sizes(10, shard_size=4) == [4, 3, 3]
    assert shard_sizes(3, shards=8) == [1, 1, 1] and shard_sizes(0, shards=2) == []


def test_pack_refuses_to_clobber(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    source = open_source("npz", npz_file(tmp_path / "a.npz"), split=None, seed=0, chunk_len=40)
    with pytest.raises(InvalidInputError, match="not empty"):
        pack(source, tmp_path / "out", progress=False)
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("name", ["digits", "mnist1d", "pystdlib"])
def test_builtins(tmp_path: Path, name: str, monkeypatch) -> None:
    monkeypatch.setenv("PHMSCALE_PYSTDLIB_BYTES", "60000")  # ~110 chunks: packs in a blink
    folder = ensure_builtin(name, str(tmp_path))
    index = json.loads((folder / "shards.json").read_text())
    for key, value in BUILTIN_DATASETS[name].items():  # what check_data assumes unpacked
        assert index["dataset"][key] == value, key
    assert all(len(index["splits"][s]["shards"]) == BUILTIN_SHARDS for s in ("train", "val"))
    samples = _plain_read(folder)
    if name == "digits":
        assert (len(samples["train"]), len(samples["val"])) == (1617, 180)
        model = {}
    elif name == "mnist1d":
        assert (len(samples["train"]), len(samples["val"])) == (4000, 1000)
        model = {"input_shape": [1, 40]}
    else:
        assert sum(len(s["bin"]) for s in samples["train"] + samples["val"]) <= 60000
        model = {"task": "causal_lm", "seq_len": 64}
    s = spec(f"builtin:{name}", f"builtin:{name}", cache_dir=str(tmp_path),
             model={"input_shape": [1, 8, 8], "patch_size": 2, **model}, loader_workers=0)
    x, y = next(iter(make_loader(s, "val").iterate(0)))
    if name == "digits":
        assert x.shape == (4, 1, 8, 8) and 0 <= x.min() and x.max() <= 1
    elif name == "mnist1d":
        assert x.shape == (4, 1, 40) and x.dtype == torch.float32
    else:
        assert x.shape == y.shape == (4, 64) and torch.equal(x[:, 1:], y[:, :-1])


def _ensure(args: tuple[str, str]) -> str:
    return str(ensure_builtin(*args))


def test_builtin_cache_is_safe_under_concurrent_first_use(tmp_path: Path) -> None:
    with multiprocessing.get_context("fork").Pool(3) as pool:
        folders = pool.map(_ensure, [("digits", str(tmp_path))] * 3)
    assert len(set(folders)) == 1 and folders[0] == str(builtin_dir("digits", str(tmp_path)))
    leftovers = [p.name for p in (tmp_path / "builtin").iterdir() if ".tmp-" in p.name]
    assert leftovers == []
    assert len(list(Path(folders[0]).glob("*.tar"))) == 2 * BUILTIN_SHARDS


def test_unknown_builtin_lists_the_valid_ones() -> None:
    names = "builtin:digits, builtin:mnist1d, builtin:pystdlib"
    with pytest.raises(InvalidInputError, match=names):
        builtin_source("imagenet")


def test_cli_pack_and_inspect(tmp_path: Path) -> None:
    src = npz_file(tmp_path / "a.npz", 30)
    out = tmp_path / "packed"
    done = cli("data", "pack", str(src), str(out), "--shards", "3", "--split", "train=0.8,val=0.2")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "shards.json", "train-000000.tar", "train-000001.tar", "train-000002.tar",
        "val-000000.tar", "val-000001.tar", "val-000002.tar"]
    shown = CliRunner().invoke(app, ["data", "inspect", str(out), "-n", "2"])
    assert shown.exit_code == 0 and "train_00000000" in shown.stdout
    assert "npy float32[1, 4]" in shown.stdout and "split train" in shown.stdout
