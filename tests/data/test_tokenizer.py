"""Byte-level BPE (phmscale.data.tokenizer): deterministic training, lossless round trips, the
bytes each token covers (bits per byte), token shards' dtype, and the job checks around
data.tokenizer (vocab size, missing file, fingerprint, absolute path on submit)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from phmscale.data.builtins import pystdlib_bytes
from phmscale.data.sources import tokenized_source
from phmscale.data.tokenizer import (
    Tokenizer,
    load_tokenizer,
    segments,
    token_dtype,
    tokenizer_problems,
    train_bpe,
)
from phmscale.errors import InvalidInputError
from phmscale.spec import load_job_dict

TEXT = pystdlib_bytes(60_000).decode("utf-8")


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    return train_bpe(TEXT, 300, tmp_path_factory.mktemp("tok") / "tokenizer.json")


def test_training_is_deterministic(tok: Tokenizer, tmp_path: Path) -> None:
    again = train_bpe(TEXT, 300, tmp_path / "again.json")
    assert again.path.read_bytes() == tok.path.read_bytes()
    assert again.sha256 == tok.sha256 and tok.vocab_size == 300


def test_round_trip_and_bytes_per_token(tok: Tokenizer) -> None:
    text = TEXT[:5000] + "\nnon-ASCII: é ü 漢字 🙂\x00\x7f"
    ids = tok.encode(text)
    assert tok.decode(ids) == text  # byte-level: every string comes back exactly
    assert len(ids) < len(text.encode())  # merges compress
    # bits per byte's denominator: the bytes the ids cover are the text's UTF-8 bytes
    assert int(tok.token_bytes()[ids].sum()) == len(text.encode("utf-8"))
    assert tok.token_bytes()[:256].tolist() == [1] * 256  # the byte alphabet


def test_segments_cut_at_line_ends() -> None:
    text = "ab\ncd\nef" * 10
    pieces = list(segments(text, 7))
    assert "".join(pieces) == text and all(p.endswith("\n") for p in pieces[:-1])
    assert list(segments("x" * 10, 4)) == ["xxxx", "xxxx", "xx"]  # no line end: cut anyway


def test_dtype_fits_the_vocabulary(tok: Tokenizer) -> None:
    assert token_dtype(512) == np.uint16 and token_dtype(65_536) == np.uint16
    assert token_dtype(65_537) == np.uint32

    class Wide:  # a 70,000-token vocabulary: ids past uint16
        vocab_size, sha256 = 70_000, "0" * 64

        def encode(self, text: str) -> list[int]:
            return [69_999 if c == "a" else ord(c) % 256 for c in text]

    for source, dtype in ((tokenized_source("t", TEXT.encode(), tok, split=None,
                                            chunk_len=33), np.uint16),
                          (tokenized_source("t", TEXT.encode(), Wide(), split=None,  # type: ignore[arg-type]
                                            chunk_len=33), np.uint32)):
        assert source.dtype == np.dtype(dtype).name and source.keys == ["npy"]
        first = np.load(io.BytesIO(next(source.splits[0].samples())["npy"]))
        assert first.dtype == dtype and first.shape == (33,)
        counts = source.extra["counts"]
        assert sum(c["bytes"] for c in counts.values()) == len(TEXT.encode())
        assert source.splits[0].count == counts["train"]["tokens"] // 33


def test_bad_inputs_name_the_field(tok: Tokenizer, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="--vocab-size 100"):
        train_bpe(TEXT, 100, tmp_path / "t.json")
    with pytest.raises(InvalidInputError, match="data.tokenizer: .*does not exist"):
        load_tokenizer(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(InvalidInputError, match="not a tokenizer.json"):
        load_tokenizer(tmp_path / "bad.json")
    (problem,) = tokenizer_problems(str(tok.path), "causal_lm", 256)
    assert "model.vocab_size is 256" in problem and "has 300 tokens" in problem
    assert str(tok.path) in problem
    assert tokenizer_problems(str(tok.path), "causal_lm", 300) == []
    assert tokenizer_problems(None, "causal_lm", 256) == []


def _lm_job(**data: object) -> dict:
    return {"name": "lm", "model": {"kind": "phm_transformer", "task": "causal_lm", "algebra": "phm", "n": 2,
                                   "vocab_size": 300, "seq_len": 16, "dim": 16, "depth": 1,
                                   "heads": 2},
            "data": {"train": "packed", **data}, "train": {"steps": 100}}


def test_fingerprint_names_the_tokenizer_only_when_set(tmp_path: Path, monkeypatch) -> None:
    from phmscale.launch.package import resolve_for_cluster

    monkeypatch.chdir(tmp_path)
    plain = load_job_dict(_lm_job())
    assert "data.tokenizer" not in plain.identity()  # unset: shipped fingerprints unchanged
    a, b = (load_job_dict(_lm_job(tokenizer=name)) for name in ("a.json", "b.json"))
    assert a.identity()["data.tokenizer"] == str(tmp_path / "a.json")  # made absolute
    assert len({plain.fingerprint(), a.fingerprint(), b.fingerprint()}) == 3
    resolved, _ = resolve_for_cluster(a, tmp_path)
    assert resolved.data.tokenizer == str(tmp_path / "a.json")
    assert resolved.fingerprint() == a.fingerprint()
