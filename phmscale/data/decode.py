"""One WebDataset sample (a dict of file bytes) → model inputs, in two steps, and batches.

`parse` runs before the shuffle and the resume skip, so it does only what is cheap and the same
every epoch: the label, and the input's array (`npy`) or, for an image, its encoded bytes as
they are (decoding waits, so a skipped sample costs no decode). `materialize` runs after the
skip: it decodes images and applies `data.augment` (augment.py), or crops an LM window. Both
are pure functions of (sample, config, epoch), so a resumed epoch yields the same batches.

classify: the input is the first of `npy`, then an image (`png`, `jpg`, `jpeg`, `ppm`, `pgm`,
`webp`, `bmp`); the label is `cls` (ASCII integer). uint8 pixels stay uint8 through the loader
worker and become float32 / 255 in `to_model` (one vectorized op a batch, in the process that
trains), then (x − data.mean) / data.std when normalization is set; any other dtype becomes
float32 as is. An array whose size equals prod(model.input_shape) is
reshaped to it ((8, 8) → (1, 8, 8)).

causal_lm: the input is `bin` (raw bytes), `txt` (UTF-8) or an integer `npy` (token ids); a
chunk of L ≥ T+1 tokens gives x = tokens[o : o+T], y = tokens[o+1 : o+T+1], where the crop
offset o is 0 for validation and, for training, a hash of (seed, epoch, key).
"""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from phmscale.data import augment as A

IMAGE_KEYS = ("png", "jpg", "jpeg", "ppm", "pgm", "webp", "bmp")
TEXT_KEYS = ("bin", "txt", "npy")


class SampleError(ValueError):
    """A sample that cannot become model inputs; the message says why."""


@dataclass(frozen=True)
class DecodeConfig:
    """What the model expects, from the job (picklable: it travels to loader workers)."""

    task: str
    input_shape: tuple[int, ...]
    seq_len: int
    num_classes: int
    vocab_size: int
    train: bool  # random crops and flips (augment, LM windows) for training only
    seed: int = 0
    augment: str = "none"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


@dataclass
class Parsed:
    """A sample after `parse`: its key, label (classify) and input (array, or image bytes)."""

    key: str
    x: np.ndarray | bytes
    y: int = 0
    url: str = ""  # its shard, for messages (one str shared by the shard's samples)


def _fields(sample: dict) -> str:
    return ", ".join(sorted(k for k in sample if not k.startswith("__"))) or "nothing"


def load_npy(data: bytes) -> np.ndarray:
    """An .npy file's array; pickled objects are refused (np.load's allow_pickle=False)."""
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as error:
        raise SampleError(f"npy: {error}") from error


def parse(sample: dict, cfg: DecodeConfig, url: str = "") -> Parsed:
    key = str(sample.get("__key__", ""))
    if cfg.task != "classify":
        return Parsed(key, _tokens(sample, cfg), 0, url)
    if "cls" not in sample:
        raise SampleError(f"no 'cls' file (the sample has: {_fields(sample)})")
    try:
        y = int(sample["cls"])
    except ValueError as error:
        raise SampleError(f"'cls' is not an integer: {sample['cls'][:20]!r}") from error
    if not 0 <= y < cfg.num_classes:
        raise SampleError(f"label {y} is outside model.num_classes={cfg.num_classes}")
    if "npy" in sample:
        arr = load_npy(sample["npy"])
        if arr.size != math.prod(cfg.input_shape):
            raise SampleError(f"input of shape {list(arr.shape)} does not fit "
                              f"model.input_shape {list(cfg.input_shape)}")
        # uint8 stays uint8: collate scales the whole batch at once.
        x = arr if arr.dtype == np.uint8 else arr.astype(np.float32, copy=False)
        return Parsed(key, x.reshape(cfg.input_shape), y, url)
    image = next((k for k in IMAGE_KEYS if k in sample), None)
    if image is None:
        raise SampleError(f"no input file: want npy or an image ({', '.join(IMAGE_KEYS)}); "
                          f"the sample has: {_fields(sample)}")
    return Parsed(key, bytes(sample[image]), y, url)


def _tokens(sample: dict, cfg: DecodeConfig) -> np.ndarray:
    if "bin" in sample:
        tokens = np.frombuffer(sample["bin"], np.uint8)
    elif "txt" in sample:
        tokens = np.frombuffer(sample["txt"], np.uint8)
    elif "npy" in sample:
        tokens = load_npy(sample["npy"]).reshape(-1)
        if not np.issubdtype(tokens.dtype, np.integer):
            raise SampleError(f"npy tokens must be integers, not {tokens.dtype}")
    else:
        raise SampleError(f"no token file: want bin, txt or npy; the sample has: "
                          f"{_fields(sample)}")
    need = cfg.seq_len + 1
    if len(tokens) < need:
        raise SampleError(f"{len(tokens)} tokens, but model.seq_len={cfg.seq_len} needs "
                          f"{need}: repack with --chunk-len {need} or more")
    if int(tokens.max()) >= cfg.vocab_size:
        raise SampleError(f"token {int(tokens.max())} >= model.vocab_size={cfg.vocab_size}")
    return tokens


def materialize(p: Parsed, cfg: DecodeConfig, epoch: int) -> tuple[np.ndarray, Any]:
    """A parsed sample → (x, y) for `epoch`: images decoded and augmented, LM windows cut."""
    # A generator of its own only where something is drawn (~4 µs a sample to seed one).
    draws = cfg.train and (cfg.task != "classify" or cfg.augment != "none")
    rng = random.Random(A.sample_seed(cfg.seed, epoch, p.key)) if draws else None
    if cfg.task != "classify":
        tokens = p.x
        assert isinstance(tokens, np.ndarray)
        need = cfg.seq_len + 1
        offset = rng.randrange(len(tokens) - need + 1) if rng is not None else 0
        window = tokens[offset : offset + need].astype(np.int64)
        return window[:-1], window[1:]
    try:
        if isinstance(p.x, bytes):
            return A.image(p.x, cfg.input_shape, cfg.augment, cfg.train, rng), p.y
        return A.array(p.x, cfg.augment, cfg.train, rng), p.y
    except (OSError, ValueError) as error:  # PIL's "cannot identify image file" is an OSError
        raise SampleError(str(error)) from error


def collate(samples: list[tuple[np.ndarray, Any]], cfg: DecodeConfig,
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Materialized samples → (x, y), y (b,) int64: causal_lm x (b, T) int64; classify x
    (b, *input_shape), uint8 pixels as they are (`to_model` scales them where the batch
    arrives: a quarter of float32's bytes cross from the loader worker, and the hand-over's
    cost is by the byte: docs/benchmarks.md, "Loader on JPEG"), other inputs float32."""
    arrays = [s[0] for s in samples]
    if len({a.dtype for a in arrays}) > 1:  # mixed uint8 and float inputs: scale one by one
        arrays = [a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a for a in arrays]
    y = torch.from_numpy(np.asarray([s[1] for s in samples], dtype=np.int64))
    return torch.from_numpy(np.stack(arrays)), y


def to_model(x: torch.Tensor, cfg: DecodeConfig) -> torch.Tensor:
    """A batch as the model takes it: uint8 pixels scaled to [0, 1], then (x − mean) / std
    per channel when normalization is set (float inputs: only the latter).

    In NumPy, in place, x · 1/(255·std) − mean/std: torch's uint8 → float32 of a fresh
    64×3×224×224 batch took 31 ms against NumPy's 4.5 ms for the whole of this (one thread;
    torch faults in the new tensor's pages, NumPy's allocator reuses them)."""
    if cfg.task != "classify":
        return x
    pixels = x.dtype == torch.uint8
    if not pixels and cfg.mean is None:
        return x
    a = x.numpy().astype(np.float32, copy=not pixels)
    mean = np.zeros(1, np.float32) if cfg.mean is None else np.asarray(cfg.mean, np.float32)
    std = np.ones(1, np.float32) if cfg.std is None else np.asarray(cfg.std, np.float32)
    shape = (1, -1) + (1,) * (a.ndim - 2)  # per channel: (1, C, 1, 1) for images
    if pixels:
        a *= (1.0 / (255.0 * std)).reshape(shape)
    elif cfg.std is not None:
        a /= std.reshape(shape)
    if cfg.mean is not None:
        a -= (mean / std).reshape(shape)
    return torch.from_numpy(a)
