"""Byte-level BPE tokenizers (Hugging Face `tokenizers`): train one, load any `tokenizer.json`,
and what bits per byte needs of it — how many UTF-8 bytes each token id covers.

- `train_bpe(text, vocab_size)`: GPT-2 style byte-level BPE (the ByteLevel pre-tokenizer's
  regex, its 256-character byte alphabet as the initial vocabulary, so every byte sequence
  encodes and decodes back exactly). Deterministic: the same text and vocab_size give the same
  tokenizer.json (tests/data/test_tokenizer.py trains twice and compares the bytes).
- `load_tokenizer(path)`: a tokenizer.json of any kind (a user's own, or the one an export
  folder holds), wrapped as `Tokenizer`.
- `Tokenizer.token_bytes()`: (V,) int64, the bytes each id stands for. Byte-level vocabularies
  map each character of a token back to one byte (exact); others decode the id alone and count
  its UTF-8 (SentencePiece `<0xNN>` byte tokens count 1). Special tokens count 0: they stand
  for no text.

Text is split into segments of about 64 KiB at line ends before encoding: encode_batch then
runs them in parallel (a 4 MB corpus: 3.0 s instead of 6.2 s on 2 cores) and the segmentation,
so the ids, are still a pure function of the text.

`tokenizers` is imported inside the functions that need it: `phmscale validate` and the
CLI's start-up do not pay for it.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from phmscale.errors import InvalidInputError

TOKENIZER_FILE = "tokenizer.json"  # its name in an export folder
SEGMENT_CHARS = 1 << 16
MIN_VOCAB = 257  # the 256 byte tokens + at least one merge
UINT16_VOCAB = 1 << 16  # ids < 65,536 fit uint16: half the shard bytes of uint32


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab_size <= 65,536), else uint32."""
    return np.dtype(np.uint16 if vocab_size <= UINT16_VOCAB else np.uint32)


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def segments(text: str, size: int = SEGMENT_CHARS) -> Iterator[str]:
    """`text` in consecutive pieces of about `size` characters, each cut after a newline where
    there is one (a piece ends mid-line only when a line is longer than `size`)."""
    start = 0
    while start < len(text):
        stop = min(len(text), start + size)
        if stop < len(text):
            cut = text.rfind("\n", start, stop)
            stop = cut + 1 if cut >= start else stop
        yield text[start:stop]
        start = stop


@functools.lru_cache(maxsize=1)
def _byte_of_char() -> dict[str, int]:
    """The ByteLevel alphabet's character → the byte it stands for (GPT-2's bytes_to_unicode:
    printable bytes map to themselves, the other 68 to U+0100 …)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


@dataclass
class Tokenizer:
    """A loaded tokenizer.json: `inner` is the `tokenizers.Tokenizer`."""

    path: Path
    sha256: str
    inner: Any

    @property
    def vocab_size(self) -> int:
        """Ids run 0 … vocab_size - 1 (added tokens included): model.vocab_size must equal it."""
        return int(self.inner.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (no special tokens added), segment by segment."""
        pieces = list(segments(text))
        out: list[int] = []
        for encoding in self.inner.encode_batch(pieces, add_special_tokens=False):
            out += encoding.ids
        return out

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.inner.decode(list(ids), skip_special_tokens=False))

    def token_bytes(self) -> np.ndarray:
        """(vocab_size,) int64: the UTF-8 bytes each token id covers (0 for special tokens)."""
        return _token_bytes(str(self.path), self.sha256)


@functools.lru_cache(maxsize=4)
def _token_bytes(path: str, sha256: str) -> np.ndarray:
    """Cached per file content: evaluation asks for it at every validation."""
    tok = load_tokenizer(path)
    inner = tok.inner
    config = json.loads(inner.to_str())
    byte_level = "ByteLevel" in json.dumps(config.get("decoder"))
    special = {a["id"] for a in config.get("added_tokens", []) if a.get("special")}
    alphabet = _byte_of_char()
    out = np.zeros(tok.vocab_size, np.int64)
    for i in range(tok.vocab_size):
        piece = inner.id_to_token(i)
        if i in special or piece is None:
            continue
        if byte_level and all(c in alphabet for c in piece):
            out[i] = len(piece)
        elif len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            out[i] = 1  # SentencePiece byte fallback
        else:
            out[i] = len(inner.decode([i], skip_special_tokens=False).encode("utf-8"))
    return out


def load_tokenizer(path: str | Path, field: str = "data.tokenizer") -> Tokenizer:
    """A tokenizer.json, or an export folder holding one; InvalidInputError naming `field`
    when it is missing or unreadable."""
    from tokenizers import Tokenizer as HFTokenizer

    file = Path(path).expanduser()
    if file.is_dir():
        file = file / TOKENIZER_FILE
    if not file.is_file():
        raise InvalidInputError(
            f"{field}: {str(path)!r} does not exist: train one (phmscale data tokenizer train "
            f"SRC --vocab-size N --out tokenizer.json) or fix the path")
    try:
        inner = HFTokenizer.from_file(str(file))
    except Exception as error:  # noqa: BLE001 - the library raises plain Exceptions
        raise InvalidInputError(f"{field}: {str(file)!r} is not a tokenizer.json the Hugging "
                                f"Face tokenizers library reads ({error})") from None
    return Tokenizer(file, file_sha256(file), inner)


def train_bpe(text: str, vocab_size: int, out: str | Path) -> Tokenizer:
    """Train a byte-level BPE of `vocab_size` ids on `text` and write it to `out`."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    if vocab_size < MIN_VOCAB:
        raise InvalidInputError(f"--vocab-size {vocab_size}: a byte-level BPE needs at least "
                                f"{MIN_VOCAB} (256 bytes + merges); for bytes alone pack "
                                "without --tokenizer (vocab 256)")
    if not text:
        raise InvalidInputError("no text to train a tokenizer on")
    inner = HFTokenizer(models.BPE())
    inner.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    inner.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[], show_progress=False)
    inner.train_from_iterator(segments(text), trainer=trainer)
    file = Path(out)
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(inner.to_str(pretty=True))
    return load_tokenizer(file, "--out")


def tokenizer_problems(tokenizer: str | None, task: str, vocab_size: int | None) -> list[str]:
    """Validate-time problems with data.tokenizer (`check_data` calls it): a missing or
    unreadable file, a model.vocab_size that differs from the tokenizer's size."""
    if tokenizer is None:
        return []
    if task != "causal_lm":
        return [f"data.tokenizer is set but model.task is {task}: tokenizers feed causal_lm "
                "models; drop data.tokenizer"]
    try:
        tok = load_tokenizer(tokenizer)
    except InvalidInputError as error:
        return [str(error)]
    if tok.vocab_size != vocab_size:
        return [f"model.vocab_size is {vocab_size} but data.tokenizer {str(tok.path)!r} has "
                f"{tok.vocab_size} tokens: set model.vocab_size: {tok.vocab_size}"]
    return []


def packed_tokenizer_problems(dataset: dict[str, Any], tokenizer: str | None,
                              where: str) -> list[str]:
    """Shards packed with one tokenizer (shards.json's `dataset` block, its tokenizer_sha256)
    read with another, or with none, or raw bytes read as tokens: the ids would mean other
    text, and bits per byte would be per token."""
    packed_sha256 = dataset.get("tokenizer_sha256")
    if packed_sha256 is None:
        if tokenizer is not None and {"bin", "txt"} & set(dataset.get("keys", [])):
            return [f"{where} holds raw bytes but data.tokenizer is set: pack the text with "
                    f"--tokenizer {tokenizer}, or drop data.tokenizer (vocab 256)"]
        return []
    if tokenizer is None:
        return [f"{where} holds BPE tokens (tokenizer sha256 {packed_sha256[:12]}) but "
                "data.tokenizer is not set: set it to the tokenizer.json the data was packed "
                "with (validation reports bits per byte from it)"]
    file = Path(tokenizer).expanduser()
    if not file.is_file():
        return []  # tokenizer_problems names the missing file
    sha = file_sha256(file)
    if sha != packed_sha256:
        return [f"{where} was packed with another tokenizer (sha256 {packed_sha256[:12]}) than "
                f"data.tokenizer {tokenizer!r} (sha256 {sha[:12]}): repack with --tokenizer "
                f"{tokenizer} or name the tokenizer it was packed with"]
    return []


def export_tokenizer(folder: str | Path) -> Tokenizer | None:
    """The tokenizer an export folder carries (`phmscale export` copies data.tokenizer into
    it), or None: a byte-level model's ids are the UTF-8 bytes."""
    file = Path(folder) / TOKENIZER_FILE
    return load_tokenizer(file, str(file)) if file.is_file() else None
