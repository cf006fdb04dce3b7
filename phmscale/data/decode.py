"""One WebDataset sample (a dict of file bytes) → model inputs, and samples → a chunk of tensors.

classify: the input is the first of `npy`, then an image (`png`, `jpg`, `jpeg`, `ppm`, `pgm`,
`webp`, `bmp`); the label is `cls` (ASCII integer). uint8 becomes float32 / 255 (per chunk, in
`collate`); any other dtype becomes float32 as is. An array whose size equals
prod(model.input_shape) is reshaped to it ((8, 8) → (1, 8, 8)); an image is converted to 1 (L)
or 3 (RGB) channels and, if its size differs, center-cropped and resized to (H, W) (PIL's
ImageOps.fit).

causal_lm: the input is `bin` (raw bytes), `txt` (UTF-8) or an integer `npy`; a chunk of L ≥ T+1
tokens gives x = tokens[o : o+T], y = tokens[o+1 : o+T+1], where the crop offset o is 0 for
validation and, for training, a hash of (seed, epoch, key) — stateless, so skipping samples on
resume cannot change another sample's crop.
"""

from __future__ import annotations

import functools
import io
import math
import zlib
from dataclasses import dataclass

import numpy as np
import torch

IMAGE_KEYS = ("png", "jpg", "jpeg", "ppm", "pgm", "webp", "bmp")
TEXT_KEYS = ("bin", "txt", "npy")


class SampleError(ValueError):
    """A sample that cannot become model inputs; the message says why."""


@dataclass(frozen=True)
class DecodeConfig:
    """What the model expects, from spec.model (picklable: it travels to loader workers)."""

    task: str
    input_shape: tuple[int, ...]
    seq_len: int
    num_classes: int
    vocab_size: int
    crop_seed: int | None  # None: crop at offset 0 (validation)


def _fields(sample: dict) -> str:
    return ", ".join(sorted(k for k in sample if not k.startswith("__"))) or "nothing"


@functools.lru_cache(maxsize=64)
def _npy_header(header: bytes) -> tuple[np.dtype, tuple[int, ...], bool, int]:
    """(dtype, shape, fortran order, data offset) of an .npy header, parsed once per distinct
    header: np.load parses it with ast on every call (more than the rest of a CIFAR-sized
    sample's decode costs), while every sample of a packed dataset shares one header."""
    stream = io.BytesIO(header)
    version = np.lib.format.read_magic(stream)
    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
            else np.lib.format.read_array_header_2_0)
    shape, fortran, dtype = read(stream)
    if dtype.hasobject:
        raise SampleError("npy holds Python objects (pickles are never loaded)")
    return dtype, shape, fortran, stream.tell()


def load_npy(data: bytes) -> np.ndarray:
    """np.load of .npy bytes, without re-parsing a header seen before."""
    if data[:6] != b"\x93NUMPY":
        raise SampleError("npy file lacks the NumPy magic bytes")
    size_bytes = 2 if data[6] == 1 else 4  # header length field: uint16 (v1) or uint32 (v2, v3)
    end = 8 + size_bytes + int.from_bytes(data[8 : 8 + size_bytes], "little")
    dtype, shape, fortran, offset = _npy_header(bytes(data[:end]))
    count = math.prod(shape)
    arr = np.frombuffer(data, dtype, count, offset)
    return arr.reshape(shape, order="F" if fortran else "C")


def _image(data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    from PIL import Image, ImageOps

    channels, height, width = shape if len(shape) == 3 else (1, *shape)
    mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(channels)
    if mode is None:
        raise SampleError(f"images decode to 1, 3 or 4 channels, not model.input_shape {shape}")
    with Image.open(io.BytesIO(data)) as im:
        im = im.convert(mode)
        if im.size != (width, height):
            im = ImageOps.fit(im, (width, height), Image.BILINEAR)
        arr = np.asarray(im, dtype=np.uint8)  # (H, W) or (H, W, C)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)  # (C, H, W)


def decode_classify(sample: dict, cfg: DecodeConfig) -> tuple[np.ndarray, int]:
    """x float32 of model.input_shape, y int."""
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
    else:
        key = next((k for k in IMAGE_KEYS if k in sample), None)
        if key is None:
            raise SampleError(f"no input file: want npy or an image "
                              f"({', '.join(IMAGE_KEYS)}); the sample has: {_fields(sample)}")
        arr = _image(sample[key], cfg.input_shape)
    if arr.size != math.prod(cfg.input_shape):
        raise SampleError(f"input of shape {list(arr.shape)} does not fit model.input_shape "
                          f"{list(cfg.input_shape)}")
    # uint8 stays uint8 here: collate scales the whole chunk at once (one vectorized op, not
    # one per sample).
    x = arr if arr.dtype == np.uint8 else arr.astype(np.float32, copy=False)
    return x.reshape(cfg.input_shape), y


def decode_lm(sample: dict, cfg: DecodeConfig) -> tuple[np.ndarray, np.ndarray]:
    """x, y int64 (T,), y = x shifted by one token."""
    if "bin" in sample:
        tokens = np.frombuffer(sample["bin"], np.uint8)
    elif "txt" in sample:
        tokens = np.frombuffer(sample["txt"], np.uint8)
    elif "npy" in sample:
        tokens = load_npy(sample["npy"]).reshape(-1)
        if not np.issubdtype(tokens.dtype, np.integer):
            raise SampleError(f"npy tokens must be integers, not {tokens.dtype}")
    else:
        raise SampleError(f"no token file: want bin, txt or npy; the sample has: {_fields(sample)}")
    need = cfg.seq_len + 1
    if len(tokens) < need:
        raise SampleError(f"{len(tokens)} tokens, but model.seq_len={cfg.seq_len} needs "
                          f"{need}: repack with --chunk-len {need} or more")
    if len(tokens) and int(tokens.max()) >= cfg.vocab_size:
        raise SampleError(f"token {int(tokens.max())} >= model.vocab_size={cfg.vocab_size}")
    offset = 0
    if cfg.crop_seed is not None and len(tokens) > need:
        key = f"{cfg.crop_seed}:{sample.get('__key__', '')}".encode()
        offset = zlib.crc32(key) % (len(tokens) - need + 1)
    window = tokens[offset : offset + need].astype(np.int64)
    return window[:-1], window[1:]


def decode(sample: dict, cfg: DecodeConfig) -> tuple[np.ndarray, np.ndarray | int]:
    return decode_classify(sample, cfg) if cfg.task == "classify" else decode_lm(sample, cfg)


def collate(
    samples: list[tuple[np.ndarray, np.ndarray | int]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoded samples → (x, y): classify (c, *input_shape) float32, (c,) int64;
    causal_lm (c, T) int64 twice. uint8 pixels become float32 / 255 here."""
    arrays = [s[0] for s in samples]
    if len({a.dtype for a in arrays}) > 1:  # mixed uint8 and float inputs: scale one by one
        arrays = [a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a for a in arrays]
    return to_tensors(np.stack(arrays), np.asarray([s[1] for s in samples], dtype=np.int64))


def to_tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """A chunk's stacked arrays as collate returns them (also for chunks of held shards)."""
    t = torch.from_numpy(x)
    if t.dtype == torch.uint8:
        t = t.to(torch.float32).div_(255.0)
    return t, torch.from_numpy(y)
