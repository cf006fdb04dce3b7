"""Image augmentation (`data.augment`): one sample's pixels → the model's (C, H, W) uint8 input.

- `none`: images are fitted to model.input_shape (center crop to its aspect, then resize);
  arrays are taken as they are.
- `cifar`: pad 4 pixels of zeros on each side, crop H×W at random, flip horizontally with p 0.5
  (He et al. 2016, the CIFAR ResNet recipe). Validation: as `none`.
- `imagenet`: training takes a random resized crop — area 8%–100% of the image, aspect ratio
  3/4–4/3, ten tries and then the center — resized to H×W, and a flip with p 0.5; validation
  resizes the shorter side to round(1.14·H) (256 for 224) and takes the center H×W.

Every random choice comes from `random.Random(sample_seed(seed, epoch, key))`: stateless per
sample, so a resumed epoch, a different worker count or a skipped neighbour cannot change a
sample's crop. The sampling follows torchvision's `RandomResizedCrop.get_params` and
`CenterCrop` exactly (same formulas, same fallback).

Why not torchvision itself: the only torchvision 0.28.0 wheel this project can install (the
release matching torch 2.13) is built against CUDA torch; beside the CPU wheel that CI and the
quickstart use it fails to import ("operator torchvision::nms does not exist"). Pillow does the
decoding instead, with two things torchvision's `decode_jpeg` lacks: a JPEG is decoded at 1/2,
1/4 or 1/8 scale in the DCT (`Image.draft`) when the crop is that much larger than the target,
and crop + resize is one antialiased `Image.resize(box=…)` call. Figures: docs/benchmarks.md,
"Loader on JPEG".
"""

from __future__ import annotations

import hashlib
import io
import math
import random
from collections.abc import Sequence

import numpy as np

AUGMENTS = ("none", "cifar", "imagenet")
VAL_RESIZE = 1.14  # imagenet validation: shorter side to 1.14 × the crop (256 for 224)
CIFAR_PAD = 4
RRC_SCALE = (0.08, 1.0)
RRC_RATIO = (3 / 4, 4 / 3)


def sample_seed(seed: int, epoch: int, key: str) -> int:
    """A stable seed per (train.seed, epoch, sample key); hash() of a str is salted per
    process, blake2b is not."""
    text = f"{seed}:{epoch}:{key}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


def resized_crop_box(width: int, height: int, rng: random.Random) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params: (left, top, w, h) of the crop."""
    area = width * height
    log_ratio = (math.log(RRC_RATIO[0]), math.log(RRC_RATIO[1]))
    for _ in range(10):
        target = area * rng.uniform(*RRC_SCALE)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, width - w), rng.randint(0, height - h), w, h
    ratio = width / height  # fallback: the center, clipped to the ratio range
    if ratio < RRC_RATIO[0]:
        w, h = width, round(width / RRC_RATIO[0])
    elif ratio > RRC_RATIO[1]:
        w, h = round(height * RRC_RATIO[1]), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def center_box(width: int, height: int, out_w: int, out_h: int) -> tuple[float, float, float,
                                                                         float]:
    """The crop (left, top, w, h) in source pixels whose resize gives out_w × out_h after the
    shorter side is scaled to VAL_RESIZE × the output's: resize + CenterCrop in one box."""
    short = round(VAL_RESIZE * min(out_w, out_h))
    scale = short / min(width, height)  # source pixels → resized pixels
    w, h = out_w / scale, out_h / scale
    return (width - w) / 2, (height - h) / 2, w, h


def _mode(channels: int) -> str:
    mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(channels)
    if mode is None:
        raise ValueError(f"images decode to 1, 3 or 4 channels, not {channels}")
    return mode


def _to_chw(image) -> np.ndarray:  # noqa: ANN001 - a PIL image (PIL imported on use)
    arr = np.asarray(image, dtype=np.uint8)  # (H, W) or (H, W, C)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def image(data: bytes, shape: Sequence[int], augment: str, train: bool,
          rng: random.Random | None) -> np.ndarray:
    """Encoded image bytes → (C, H, W) uint8 of `shape` under `augment`."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return _apply(im, shape, augment, train, rng)


def _apply(im, shape: Sequence[int], augment: str, train: bool,  # noqa: ANN001 - PIL image
           rng: random.Random | None) -> np.ndarray:
    from PIL import Image, ImageOps

    channels, height, width = shape if len(shape) == 3 else (1, *shape)
    mode = _mode(channels)
    if augment == "imagenet":
        if train:
            assert rng is not None
            left, top, w, h = resized_crop_box(im.width, im.height, rng)
        else:
            left, top, w, h = center_box(im.width, im.height, width, height)
        # Decode at the smallest DCT scale that still leaves the crop ≥ the output: a
        # 500×375 JPEG cropped to 224 decodes at 1/2 when the crop is ≥ 448 wide.
        reduce = max(1, min(int(w // width), int(h // height), 8))
        if reduce > 1 and im.format == "JPEG":
            full = im.size
            im.draft(mode, (math.ceil(full[0] / reduce), math.ceil(full[1] / reduce)))
            sx, sy = im.size[0] / full[0], im.size[1] / full[1]
            left, top, w, h = left * sx, top * sy, w * sx, h * sy
        im = im.convert(mode).resize((width, height), Image.BILINEAR,
                                     box=(left, top, left + w, top + h))
        if train and rng is not None and rng.random() < 0.5:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
        return _to_chw(im)
    im = im.convert(mode)
    if im.size != (width, height):
        im = ImageOps.fit(im, (width, height), Image.BILINEAR)
    arr = _to_chw(im)
    return pad_crop_flip(arr, rng) if augment == "cifar" and train else arr


def pad_crop_flip(arr: np.ndarray, rng: random.Random | None) -> np.ndarray:
    """cifar: (C, H, W) → zero-pad CIFAR_PAD each side, a random H×W crop, flip with p 0.5."""
    assert rng is not None
    c, h, w = arr.shape
    top, left = rng.randint(0, 2 * CIFAR_PAD), rng.randint(0, 2 * CIFAR_PAD)
    padded = np.zeros((c, h + 2 * CIFAR_PAD, w + 2 * CIFAR_PAD), arr.dtype)
    padded[:, CIFAR_PAD:CIFAR_PAD + h, CIFAR_PAD:CIFAR_PAD + w] = arr
    out = padded[:, top:top + h, left:left + w]
    if rng.random() < 0.5:
        out = out[:, :, ::-1]
    return np.ascontiguousarray(out)


def array(arr: np.ndarray, augment: str, train: bool, rng: random.Random | None) -> np.ndarray:
    """A (C, H, W) array sample (CIFAR or MNIST packed as npy) under `augment`; `imagenet`
    goes through the image path (uint8 only)."""
    if not train or augment == "none":
        return arr
    if arr.ndim != 3:
        raise ValueError(f"data.augment: {augment} needs (C, H, W) samples, not shape "
                         f"{list(arr.shape)}")
    if augment == "cifar":
        return pad_crop_flip(arr, rng)
    if arr.dtype != np.uint8:
        raise ValueError("data.augment: imagenet on arrays needs uint8 pixels")
    from PIL import Image

    hwc = arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)
    return _apply(Image.fromarray(np.ascontiguousarray(hwc)), arr.shape, augment, train, rng)
