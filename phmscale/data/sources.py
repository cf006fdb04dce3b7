"""Readers that turn a dataset on disk into encoded samples, split by split, ready to pack.

Sample format (what every shard holds, keyed `{split}_{index:08d}`):

- classification, arrays (cifar, mnist-idx, npz, digits, mnist1d): `npy` — one sample's array
  in `np.save` format, channels first, dtype kept (uint8 pixels stay uint8: 4× smaller than
  float32) — and `cls`, the class index as ASCII digits.
- classification, image-folder: the file's original bytes under `png` or `jpg` (no re-encoding:
  lossless, and JPEG stays ~10× smaller than raw pixels) and `cls`.
- text (text, pystdlib): `bin`, a chunk of `chunk_len` raw bytes (byte-level tokens, vocab 256);
  with a tokenizer (`--tokenizer`), `npy`, a chunk of `chunk_len` token ids (uint16 for
  vocabularies up to 65,536, else uint32).

Splits: a source with its own split (CIFAR's test batch, MNIST's t10k files, mnist1d's test set,
an image folder with train/ and val/ subfolders, npz arrays x_val/y_val) keeps it, its test part
becoming `val`; otherwise `--split train=0.9,val=0.1` cuts a seeded random permutation
(classification) or contiguous byte ranges (text: no chunk of val text is ever seen in train).
Classification samples are written in a seeded shuffled order so that every shard mixes classes
(an image folder is sorted by class; a 1000-sample shuffle buffer could not undo that).
"""

from __future__ import annotations

import gzip
import pickle
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from phmscale.data.tokenizer import Tokenizer, token_dtype
from phmscale.data.urls import webdataset
from phmscale.errors import InvalidInputError

Sample = dict[str, bytes]
FORMATS = ("image-folder", "cifar", "mnist-idx", "npz", "text")
_SPLIT_NAME = re.compile(r"^[a-z][a-z0-9]*$")
DEFAULT_SPLIT = "train=0.9,val=0.1"
IMAGE_EXTS = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg"}


@dataclass
class Split:
    """One split: how many samples and a function yielding them (encoded) in pack order."""

    name: str
    count: int
    samples: Callable[[], Iterator[Sample]]


@dataclass
class Source:
    """A dataset ready to pack: what its samples are and the samples of each split."""

    name: str
    task: str  # "classify" | "causal_lm"
    keys: list[str]  # the files every sample holds
    dtype: str
    shape: list[int] | None  # per-sample input shape (None: varies, e.g. image sizes)
    num_classes: int | None
    splits: list[Split]
    extra: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """The `dataset` block of shards.json."""
        return {"source": self.name, "task": self.task, "keys": sorted(self.keys),
                "dtype": self.dtype, "shape": self.shape, "num_classes": self.num_classes,
                **self.extra}


def parse_split(spec: str | None) -> list[tuple[str, float]] | None:
    """`train=0.9,val=0.1` → [(train, 0.9), (val, 0.1)]; None or `native` → None."""
    if spec is None or spec == "native":
        return None
    parts: list[tuple[str, float]] = []
    for item in spec.split(","):
        name, _, frac = item.strip().partition("=")
        try:
            value = float(frac) if frac else 1.0
        except ValueError:
            value = -1.0
        if not _SPLIT_NAME.match(name) or not 0 < value <= 1:
            raise InvalidInputError(
                f"--split {spec!r}: each part must be name=fraction with a lowercase name and "
                f"0 < fraction <= 1, e.g. train=0.9,val=0.1"
            )
        parts.append((name, value))
    if abs(sum(v for _, v in parts) - 1) > 1e-6 or len({n for n, _ in parts}) != len(parts):
        raise InvalidInputError(f"--split {spec!r}: names must differ and fractions sum to 1")
    return parts


# -- classification: partition items, encode lazily -----------------------------------------


def _partition(
    native: dict[str, int], split: str | None, seed: int
) -> dict[str, list[tuple[str, int]]]:
    """Assign (native part, index) items to output splits, each in a seeded shuffled order."""
    parts = parse_split(split)
    rng = np.random.default_rng(seed)
    if parts is None and len(native) > 1:
        return {("val" if name == "test" else name): [(name, int(i)) for i in rng.permutation(n)]
                for name, n in native.items()}
    parts = parts or parse_split(DEFAULT_SPLIT) or []
    items = [(name, i) for name, n in native.items() for i in range(n)]
    order = rng.permutation(len(items))
    out, start = {}, 0
    for k, (name, frac) in enumerate(parts):
        stop = len(items) if k == len(parts) - 1 else start + int(frac * len(items))
        out[name] = [items[j] for j in order[start:stop]]
        start = stop
    return out


def _classify_source(
    name: str,
    native: dict[str, int],
    encode: Callable[[str, int], Sample],
    *,
    split: str | None,
    seed: int,
    keys: list[str],
    dtype: str,
    shape: list[int] | None,
    num_classes: int,
    extra: dict[str, Any] | None = None,
) -> Source:
    splits = [
        Split(out, len(items), lambda items=items: (encode(p, i) for p, i in items))
        for out, items in _partition(native, split, seed).items()
    ]
    return Source(name, "classify", keys, dtype, shape, num_classes, splits, extra or {})


STATS_SAMPLES = 1000  # images decoded for pixel statistics: ±0.5% of the mean at 1000


def pixel_stats(images: list[np.ndarray]) -> dict[str, list[float]]:
    """Per-channel mean and std of (C, H, W) uint8 images, on pixels scaled to [0, 1]: what
    `data.mean`/`data.std` default to (shards.json's dataset block)."""
    channels = images[0].shape[0]
    total = np.zeros(channels)
    square = np.zeros(channels)
    count = 0
    for img in images:
        px = img.reshape(channels, -1).astype(np.float64) / 255.0
        total += px.sum(1)
        square += (px * px).sum(1)
        count += px.shape[1]
    mean = total / count
    std = np.sqrt(np.maximum(square / count - mean * mean, 1e-12))
    return {"mean": [round(float(m), 4) for m in mean], "std": [round(float(s), 4) for s in std]}


def _sample_indices(count: int, seed: int) -> list[int]:
    """A seeded subsample of up to STATS_SAMPLES indices."""
    rng = np.random.default_rng(seed)
    return sorted(rng.permutation(count)[:STATS_SAMPLES].tolist())


def arrays_source(
    name: str, native: dict[str, tuple[np.ndarray, np.ndarray]], *, split: str | None, seed: int,
    num_classes: int | None = None, extra: dict[str, Any] | None = None,
) -> Source:
    """Classification from in-memory arrays x (N, *shape) and integer labels y (N,)."""
    for part, (x, y) in native.items():
        if len(x) != len(y) or not np.issubdtype(np.asarray(y).dtype, np.integer):
            raise InvalidInputError(f"{name}: {part}: x and y must have equal length, y integers")
    x0 = next(iter(native.values()))[0]
    classes = num_classes or int(max(int(np.max(y)) for _, y in native.values()) + 1)

    if x0.dtype == np.uint8 and x0.ndim == 4:  # images (N, C, H, W): record pixel statistics
        xs = native.get("train", next(iter(native.values())))[0]
        extra = {**pixel_stats([xs[i] for i in _sample_indices(len(xs), seed)]), **(extra or {})}
    numpy_dumps = webdataset().numpy_dumps

    def encode(part: str, i: int) -> Sample:
        x, y = native[part]
        return {"npy": numpy_dumps(np.ascontiguousarray(x[i])), "cls": b"%d" % int(y[i])}

    return _classify_source(
        name, {p: len(v[1]) for p, v in native.items()}, encode, split=split, seed=seed,
        keys=["npy", "cls"], dtype=str(x0.dtype), shape=list(x0.shape[1:]),
        num_classes=classes, extra=extra,
    )


def image_folder(root: Path, *, split: str | None, seed: int) -> Source:
    """ImageNet layout: root/<class>/*.png|jpg, or root/{train,val}/<class>/… (kept as splits)."""
    from PIL import Image

    tops = {p.name: p for p in root.iterdir() if p.is_dir()} if root.is_dir() else {}
    if "train" in tops and ("val" in tops or "test" in tops):
        parts = {"train": tops["train"], "test": tops.get("val") or tops["test"]}
    else:
        parts = {"all": root}
    files: dict[str, list[tuple[Path, str]]] = {}
    for part, folder in parts.items():
        files[part] = [
            (f, c.name)
            for c in sorted(p for p in folder.iterdir() if p.is_dir())
            for f in sorted(c.rglob("*"))
            if f.suffix.lower() in IMAGE_EXTS and f.is_file()
        ]
    classes = sorted({c for fs in files.values() for _, c in fs})
    if not classes:
        raise InvalidInputError(f"{root}: no class folders with .png/.jpg images found")
    shapes, channels = set(), {"L": 1, "RGB": 3, "RGBA": 4, "P": 3, "LA": 2}
    for fs in files.values():
        for f, _ in fs:
            try:
                with Image.open(f) as im:  # reads the header only
                    shapes.add((channels.get(im.mode, 3), im.height, im.width))
            except Exception as error:  # noqa: BLE001 - any unreadable image is the user's to fix
                raise InvalidInputError(f"{f}: not a readable image ({error})") from error
    label = {c: i for i, c in enumerate(classes)}
    exts = sorted({IMAGE_EXTS[f.suffix.lower()] for fs in files.values() for f, _ in fs})
    train = files.get("train") or files.get("all") or []
    stats = pixel_stats([_thumbnail(train[i][0], 3 if shapes and max(s[0] for s in shapes) > 1
                                    else 1) for i in _sample_indices(len(train), seed)])

    def encode(part: str, i: int) -> Sample:
        f, c = files[part][i]
        return {IMAGE_EXTS[f.suffix.lower()]: f.read_bytes(), "cls": b"%d" % label[c]}

    return _classify_source(
        "image-folder", {p: len(fs) for p, fs in files.items()}, encode, split=split, seed=seed,
        keys=["cls", *exts] if len(exts) == 1 else ["cls"], dtype="uint8",
        shape=list(next(iter(shapes))) if len(shapes) == 1 else None,
        num_classes=len(classes), extra={"classes": classes, "image_exts": exts, **stats},
    )


def _thumbnail(path: Path, channels: int) -> np.ndarray:
    """An image decoded small (JPEG at 1/8 scale in the DCT), (C, h, w) uint8: statistics
    need the colours, not the detail."""
    from PIL import Image

    with Image.open(path) as im:
        mode = "RGB" if channels == 3 else "L"
        im.draft(mode, (64, 64))
        im = im.convert(mode)
        im.thumbnail((64, 64))
        arr = np.asarray(im, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def cifar(root: Path, *, split: str | None, seed: int) -> Source:
    """CIFAR-10 (data_batch_1..5, test_batch) or CIFAR-100 (train, test) python pickles.

    These are pickles by the dataset's own design: only pack files from a source you trust.
    """
    if (root / "data_batch_1").exists():
        groups, label_key, meta, names_key = (
            {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
            b"labels", "batches.meta", b"label_names")
    elif (root / "train").exists():
        groups, label_key, meta, names_key = (
            {"train": ["train"], "test": ["test"]}, b"fine_labels", "meta", b"fine_label_names")
    else:
        raise InvalidInputError(f"{root}: no CIFAR batches (data_batch_1… or train/test) found")
    native = {}
    for part, names in groups.items():
        xs, ys = [], []
        for n in names:
            if not (root / n).exists():
                continue
            with open(root / n, "rb") as f:
                batch = pickle.load(f, encoding="bytes")
            xs.append(np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32))  # (N, C, H, W)
            ys.append(np.asarray(batch[label_key], np.int64))
        if xs:
            native[part] = (np.concatenate(xs), np.concatenate(ys))
    classes = None
    if (root / meta).exists():
        with open(root / meta, "rb") as f:
            classes = [c.decode() for c in pickle.load(f, encoding="bytes")[names_key]]
    extra = {"classes": classes} if classes else {}
    return arrays_source("cifar", native, split=split, seed=seed,
                         num_classes=len(classes) if classes else None, extra=extra)


_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format), raw or gzipped."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    zero, code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or code not in _IDX_DTYPES:
        raise InvalidInputError(f"{path}: not an IDX file (bad magic number)")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, _IDX_DTYPES[code], int(np.prod(dims)), 4 + 4 * ndim).reshape(dims)


def mnist_idx(root: Path, *, split: str | None, seed: int) -> Source:
    """MNIST / Fashion-MNIST / KMNIST IDX files:
    {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]."""
    def find(prefixes: tuple[str, ...], kind: str) -> Path | None:
        hits = sorted(p for p in root.iterdir()
                      if p.name.lower().startswith(prefixes) and kind in p.name.lower())
        return hits[0] if hits else None

    native = {}
    for part, prefixes in (("train", ("train",)), ("test", ("t10k", "test"))):
        images, labels = find(prefixes, "images-idx3"), find(prefixes, "labels-idx1")
        if images and labels:
            x = read_idx(images).astype(np.uint8)[:, None]  # (N, 1, H, W)
            native[part] = (x, read_idx(labels).astype(np.int64))
    if "train" not in native:
        raise InvalidInputError(
            f"{root}: no train-images-idx3-ubyte[.gz] + train-labels-idx1-ubyte[.gz] found")
    return arrays_source("mnist-idx", native, split=split, seed=seed)


def npz(path: Path, *, split: str | None, seed: int) -> Source:
    """An .npz with arrays x (N, *shape) and y (N,); x_val/y_val (or x_test/y_test) form val."""
    with np.load(path, allow_pickle=False) as z:
        if "x" not in z or "y" not in z:
            raise InvalidInputError(f"{path}: needs arrays 'x' and 'y' (has {sorted(z.files)})")
        arrays = {k: z[k] for k in z.files}
    # float64 halves to float32: the loader feeds float32 anyway.
    fix = {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in arrays.items()}
    native = {"train": (fix["x"], fix["y"].astype(np.int64))}
    for suffix in ("val", "test"):
        if f"x_{suffix}" in fix:
            native["test"] = (fix[f"x_{suffix}"], fix[f"y_{suffix}"].astype(np.int64))
            break
    return arrays_source("npz", native, split=split, seed=seed)


# -- text ---------------------------------------------------------------------------------


def _text_splits(name: str, data: bytes, split: str | None, chunk_len: int, units: str,
                 encode: Callable[[bytes], Any], key: str,
                 write: Callable[[Any], bytes]) -> tuple[list[Split], dict[str, dict[str, int]]]:
    """Splits of contiguous byte ranges of `data` (no chunk of val text is ever seen in train),
    each range encoded to a sequence of `units` (bytes, or token ids) and cut into samples
    {key: write(chunk of chunk_len)} (remainders dropped); also each split's byte and unit
    counts."""
    parts = parse_split(split) or parse_split(DEFAULT_SPLIT) or []
    splits, counts, start = [], {}, 0
    for k, (part, frac) in enumerate(parts):
        stop = len(data) if k == len(parts) - 1 else start + int(frac * len(data))
        seq = encode(data[start:stop])
        count = len(seq) // chunk_len
        counts[part] = {"bytes": stop - start, units: len(seq)}

        def chunks(seq: Any = seq, count: int = count) -> Iterator[Sample]:
            for i in range(count):
                yield {key: write(seq[i * chunk_len : (i + 1) * chunk_len])}

        splits.append(Split(part, count, chunks))
        start = stop
    if not splits or splits[0].count == 0:
        first = parts[0][0] if parts else "train"
        got = "" if units == "bytes" else f" ({counts.get(first, {}).get(units, 0)} {units})"
        raise InvalidInputError(
            f"{name}: {len(data)} bytes{got} give no chunk of {chunk_len} {units} for "
            f"'{first}': lower --chunk-len or add text")
    return splits, counts


def text_source(name: str, data: bytes, *, split: str | None, chunk_len: int,
                extra: dict[str, Any] | None = None) -> Source:
    """Byte chunks of `chunk_len` from contiguous ranges of `data` (remainders dropped)."""
    splits, _ = _text_splits(name, data, split, chunk_len, "bytes", bytes, "bin", bytes)
    meta = {"chunk_len": chunk_len, "vocab_size": 256, "bytes": len(data), **(extra or {})}
    return Source(name, "causal_lm", ["bin"], "uint8", [chunk_len], None, splits, meta)


def tokenized_source(name: str, data: bytes, tokenizer: Tokenizer, *, split: str | None,
                     chunk_len: int, extra: dict[str, Any] | None = None) -> Source:
    """Chunks of `chunk_len` token ids (`npy`, uint16 or uint32) from contiguous byte ranges of
    `data`, each range encoded on its own (no token straddles two splits; remainders dropped).

    Bytes that are not UTF-8 become U+FFFD before encoding. The dataset block records each
    split's text bytes and tokens (`counts`) and the tokenizer's sha256, which `check_data`
    compares with data.tokenizer's."""
    dtype = token_dtype(tokenizer.vocab_size)

    def encode(piece: bytes) -> np.ndarray:
        return np.asarray(tokenizer.encode(piece.decode("utf-8", errors="replace")), dtype)

    splits, counts = _text_splits(name, data, split, chunk_len, "tokens", encode, "npy",
                                  webdataset().numpy_dumps)
    meta = {"chunk_len": chunk_len, "vocab_size": tokenizer.vocab_size, "bytes": len(data),
            "tokenizer_sha256": tokenizer.sha256, "counts": counts, **(extra or {})}
    return Source(name, "causal_lm", ["npy"], dtype.name, [chunk_len], None, splits, meta)


def read_text_files(root: Path) -> bytes:
    """A file's bytes, or every non-hidden file under a folder, concatenated in sorted order."""
    if root.is_file():
        return root.read_bytes()
    files = sorted(
        (p for p in root.rglob("*")
         if p.is_file() and not any(s.startswith(".") for s in p.relative_to(root).parts)),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    if not files:
        raise InvalidInputError(f"{root}: no files to read as text")
    return b"".join(p.read_bytes() for p in files)


def detect_format(path: Path) -> str:
    """Guess a source's format from its layout."""
    if path.is_file():
        return "npz" if path.suffix == ".npz" else "text"
    names = {p.name.lower() for p in path.iterdir()} if path.is_dir() else set()
    if "data_batch_1" in names or {"train", "test", "meta"} <= names:
        return "cifar"
    if any("idx3-ubyte" in n for n in names):
        return "mnist-idx"
    for sub in (p for p in path.rglob("*") if p.is_file()):
        if sub.suffix.lower() in IMAGE_EXTS:
            return "image-folder"
    return "text"


def open_source(fmt: str, path: Path, *, split: str | None, seed: int, chunk_len: int) -> Source:
    """The Source for a file-based format."""
    if not path.exists():
        raise InvalidInputError(f"{path}: no such file or directory")
    if fmt == "image-folder":
        return image_folder(path, split=split, seed=seed)
    if fmt == "cifar":
        return cifar(path, split=split, seed=seed)
    if fmt == "mnist-idx":
        return mnist_idx(path, split=split, seed=seed)
    if fmt == "npz":
        return npz(path, split=split, seed=seed)
    if fmt == "text":
        return text_source("text", read_text_files(path), split=split, chunk_len=chunk_len)
    raise InvalidInputError(f"unknown --format {fmt!r}: choose one of {', '.join(FORMATS)}")
