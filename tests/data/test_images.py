"""Images: a JPEG class folder packs as it is (encoded bytes, class names, pixel statistics),
augments the same way across a resume, and trains a ResNet through `phmscale run`."""

from __future__ import annotations

import json
import random
import tarfile
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from phmscale.bench.loader import synthetic_jpegs
from phmscale.data import augment as A
from phmscale.data import make_loader
from phmscale.spec import JobSpec
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory) -> Path:
    """ImageNet layout: train/<class>/*.jpg, val/<class>/*.jpg, 3 classes, 120 images of
    60-90 px a side (small, so the module's tests take seconds)."""
    return synthetic_jpegs(tmp_path_factory.mktemp("jpegs") / "imagenet", 120, classes=3,
                           sizes=(60, 90))


@pytest.fixture(scope="module")
def packed(jpegs: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("packed") / "shards"
    result = run_cli("data", "pack", str(jpegs), str(out), "--shards", "4")
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def _job(packed: Path, **data) -> JobSpec:
    return JobSpec(name="images", model={"kind": "resnet", "algebra": "real",
                                         "input_shape": [3, 32, 32], "num_classes": 3},
                   data={"train": str(packed), "val": str(packed), "batch_size": 8,
                         "loader_workers": 2, "shuffle_buffer": 20, **data})


def test_a_class_folder_packs_its_encoded_bytes_and_statistics(jpegs: Path, packed: Path) -> None:
    index = json.loads((packed / "shards.json").read_text())
    dataset = index["dataset"]
    assert dataset["classes"] == ["class0", "class1", "class2"]
    assert index["splits"]["train"]["count"] == 108 and index["splits"]["val"]["count"] == 12
    assert len(dataset["mean"]) == len(dataset["std"]) == 3
    assert all(0.2 < m < 0.8 for m in dataset["mean"]) and all(0 < s < 0.5 for s in dataset["std"])
    originals = {p.read_bytes() for p in jpegs.rglob("*.jpg")}
    with tarfile.open(packed / index["splits"]["train"]["shards"][0]) as tar:
        stored = [tar.extractfile(m).read() for m in tar if m.name.endswith(".jpg")]
    assert stored and all(b in originals for b in stored)  # no re-encode


def test_imagenet_augment_is_the_same_across_a_resume(packed: Path) -> None:
    loader = make_loader(_job(packed, augment="imagenet"), "train")
    x, _ = next(iter(loader.iterate(0)))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32
    assert abs(float(x.mean())) < 1.0  # normalized by the recorded statistics
    full = list(loader.iterate(2))
    for k in (1, 5):
        again = list(loader.iterate(2, k))
        assert all(torch.equal(a[0], b[0]) for a, b in zip(again, full[k:], strict=True))
    p = loader.batches_per_epoch
    streamed = list(islice(loader.stream(2 * p + 3), p - 3))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(streamed, full[3:], strict=True))
    assert not torch.equal(list(loader.iterate(3))[0][0], full[0][0])  # a new epoch, new crops


def test_validation_crops_the_center_every_time(packed: Path) -> None:
    loader = make_loader(_job(packed, augment="imagenet"), "val")
    a, b = list(loader.iterate(0)), list(loader.iterate(1))
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(a, b, strict=True))
    assert sum(len(y) for _, y in a) == 12


def test_resized_crop_follows_torchvision() -> None:
    rng = random.Random(0)
    for _ in range(200):
        w, h = rng.randint(20, 600), rng.randint(20, 600)
        left, top, cw, ch = A.resized_crop_box(w, h, rng)
        assert 0 <= left and left + cw <= w and 0 <= top and top + ch <= h
        assert cw * ch <= w * h
    # A 1000×10 strip never fits the ratio range: the fallback is its center, ratio 4/3.
    assert A.resized_crop_box(1000, 10, random.Random(1)) == ((1000 - 13) // 2, 0, 13, 10)


def test_cifar_pads_crops_and_flips() -> None:
    arr = np.arange(3 * 8 * 8, dtype=np.uint8).reshape(3, 8, 8)
    outs = [A.pad_crop_flip(arr, random.Random(s)) for s in range(30)]
    assert all(o.shape == (3, 8, 8) for o in outs)
    assert any(np.array_equal(o, arr) for o in outs) or len({o.tobytes() for o in outs}) > 5
    assert any((o == 0).all(axis=0).any() for o in outs)  # some crops show padding


def test_a_resnet_trains_on_jpegs_with_imagenet_augment(packed: Path, tmp_path: Path) -> None:
    job = {"name": "jpeg-resnet", "model": {"kind": "resnet", "algebra": "quaternion",
                                            "input_shape": [3, 32, 32], "num_classes": 3,
                                            "arch": "resnet20", "width": 8},
           "data": {"train": str(packed), "val": str(packed), "batch_size": 8,
                    "loader_workers": 1, "augment": "imagenet"},
           "train": {"steps": 6, "eval_every": 3, "log_every": 3,
                     "optimizer": {"name": "sgd", "lr": 0.05}},
           "checkpoint": {"every": 3}}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    result = run_cli("run", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "val_accuracy" in result.stdout


@pytest.mark.parametrize("override,needle", [
    (["--set", "data.augment=imagenet", "--set", "model.task=causal_lm"], "data.augment"),
    (["--set", "data.mean=[0.5]", "--set", "data.std=[0.2]"], "data.mean"),
    (["--set", "data.mean=[0.5,0.5,0.5]"], "data.mean and data.std go together"),
])
def test_bad_image_settings_exit_2(packed: Path, tmp_path: Path, override: list[str],
                                   needle: str) -> None:
    job = {"name": "bad", "model": {"kind": "resnet", "algebra": "real",
                                    "input_shape": [3, 32, 32], "num_classes": 3},
           "data": {"train": str(packed), "batch_size": 8}}
    if "model.task=causal_lm" in override:
        job["model"] = {"algebra": "real", "task": "causal_lm", "seq_len": 8}
        override = ["--set", "data.augment=imagenet"]
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    result = run_cli("validate", str(path), *override, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert needle in result.stdout + result.stderr and "Traceback" not in result.stderr
