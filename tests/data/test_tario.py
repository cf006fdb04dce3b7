"""The lean tar reader gives what Python's tarfile (webdataset's reader) gives: the same
members and errors on every tar format, at every truncation point, under bit flips."""

from __future__ import annotations

import io
import random
import tarfile

import pytest
import webdataset as wds

from phmscale.data import tario

NAMES = ["a.npy", "a.cls", "x" * 150 + ".txt", "dir/" + "y" * 120 + "/z.bin", "ünï.txt",
         "b.npy", "b.cls"]


def _archive(fmt: int, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for i, name in enumerate(NAMES):
            if fmt == tarfile.USTAR_FORMAT and len(name) > 100 and "/" not in name:
                continue  # ustar cannot hold a 150-character name without a '/'
            data = bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 511, 512, 700])))
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), (0 if i % 2 else 1.5)  # float mtime: pax record
            info.uname = "ü" if i % 3 == 0 else "u"
            tar.addfile(info, io.BytesIO(data))
        folder = tarfile.TarInfo("folder")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
    return buf.getvalue()


def _tarfile_members(data: bytes):
    tar = tarfile.open(fileobj=io.BytesIO(data), mode="r|*")
    for member in tar:
        if member.isreg():
            yield member.name, tar.extractfile(member).read()


def _outcome(members) -> tuple[list[tuple[str, bytes]], str | None]:
    got = []
    try:
        for member in members:
            got.append(member)
    except Exception as error:  # noqa: BLE001 - the error type is the outcome
        return got, type(error).__name__
    return got, None


FORMATS = {"ustar": tarfile.USTAR_FORMAT, "gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT}


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_members_and_truncations_match_tarfile(fmt):
    data = _archive(fmt)
    whole = list(_tarfile_members(data))
    assert list(tario.tar_members(io.BytesIO(data))) == whole
    assert len(whole) >= 6 and any(len(name) > 100 for name, _ in whole)
    sizes = dict(whole)
    for cut in sorted(set(range(0, len(data), 97)) | set(range(0, len(data), 512))):
        ours = _outcome(tario.tar_members(io.BytesIO(data[:cut])))
        theirs = _outcome(_tarfile_members(data[:cut]))
        if ours != theirs and ours[1] and theirs[1] and theirs[0][:-1] == ours[0]:
            # tarfile's stream mode hands out a cut member's short data before raising; we
            # raise without it, so a cut sample never reaches the decoder
            name, short = theirs[0][-1]
            assert len(short) < len(sizes[name]), cut
            continue
        assert ours == theirs, cut


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_bit_flips_match_tarfile(fmt):
    data, rng = _archive(fmt, seed=1), random.Random(2)
    for _ in range(400):
        bad = bytearray(data)
        bad[rng.randrange(len(bad))] ^= 1 << rng.randrange(8)
        bad = bytes(bad)
        assert _outcome(tario.tar_members(io.BytesIO(bad))) == \
            _outcome(_tarfile_members(bad))


def test_samples_equal_webdatasets_and_compressed_shards_fall_back(tmp_path):
    import gzip

    plain = tmp_path / "s.tar"
    with wds.TarWriter(str(plain), encoder=False) as sink:
        for i in range(5):
            sink.write({"__key__": f"k{i}", "npy": bytes([i]) * 300, "cls": str(i).encode()})
    zipped = tmp_path / "s.tar.gz"
    zipped.write_bytes(gzip.compress(plain.read_bytes()))
    for path in (plain, zipped):
        def source(path=path):
            return iter([{"url": str(path)}])
        ours = list(wds.DataPipeline(source, tario.tarfile_to_samples()))
        theirs = list(wds.DataPipeline(source, wds.tarfile_to_samples()))
        assert [s["__key__"] for s in ours] == [f"k{i}" for i in range(5)]
        assert ours == theirs


def test_empty_and_garbage_shards_raise_like_tarfile():
    for data, message in ((b"", "empty file"), (b"\x01" * 512, "bad checksum"),
                          (b"\x01" * 100, "truncated header")):
        with pytest.raises(tarfile.ReadError, match=message):
            list(tario.tar_members(io.BytesIO(data)))
    assert list(tario.tar_members(io.BytesIO(bytes(1024)))) == []  # just the end marker


class _Trickle(io.RawIOBase):
    """A stream that returns at most a few bytes per read, as a network stream may."""

    def __init__(self, data: bytes):
        self.data, self.pos, self.rng = data, 0, random.Random(3)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        size = len(self.data) - self.pos if size < 0 else size
        size = min(size, self.rng.randint(1, 7))
        out = self.data[self.pos:self.pos + size]
        self.pos += len(out)
        return out


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_short_reads_lose_nothing(fmt, tmp_path):
    data = _archive(fmt)
    got = list(tario.tar_file_iterator_fast(_Trickle(data)))
    assert [(m["fname"], m["data"]) for m in got] == list(_tarfile_members(data))


def _block(name: str, kind: bytes, data: bytes = b"", size: int | None = None) -> bytes:
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, len(data) if size is None else size
    header = info.tobuf(tarfile.USTAR_FORMAT) if kind != tarfile.DIRTYPE else info.tobuf()
    return header + data + bytes(-len(data) % 512)


def _pax_block(records: dict[str, str]) -> bytes:
    body = b""
    for key, value in records.items():
        record = f" {key}={value}\n".encode()
        length = len(record) + len(str(len(record)))
        length += len(str(length)) - len(str(len(record)))
        body += str(length).encode() + record
    return _block("././@PaxHeader", tarfile.XHDTYPE, body)


def test_header_chains_and_dataless_types_match_tarfile():
    payload = b"x" * 700
    chains = {
        "pax then gnu name": _pax_block({"path": "from-pax.bin"})
        + _block("././@LongLink", tarfile.GNUTYPE_LONGNAME, b"from-gnu.bin\0")
        + _block("short.bin", tarfile.REGTYPE, payload),
        "gnu name then pax": _block("././@LongLink", tarfile.GNUTYPE_LONGNAME, b"from-gnu.bin\0")
        + _pax_block({"path": "from-pax.bin"}) + _block("short.bin", tarfile.REGTYPE, payload),
        "pax size": _pax_block({"size": "700"}) + _block("a.bin", tarfile.REGTYPE, payload, 5),
        "directory with a size": _block("d", tarfile.DIRTYPE, size=1024)
        + _block("after.bin", tarfile.REGTYPE, payload),
    }
    for name, body in chains.items():
        data = body + bytes(1024)
        theirs = list(_tarfile_members(data))
        assert list(tario.tar_members(io.BytesIO(data))) == theirs, name
        assert theirs, name


def test_a_tar_error_reaches_the_handler_once(tmp_path):
    body = (_block("a.npy", tarfile.REGTYPE, b"n" * 700) + _block("a.cls", tarfile.REGTYPE, b"1")
            + _block("b.npy", tarfile.REGTYPE, b"n" * 700))
    shard = tmp_path / "cut.tar"
    shard.write_bytes(body[:3300])  # inside b.npy's data (from byte 3072)
    seen = []

    def handler(error: Exception) -> bool:
        seen.append(str(error.args[0]))
        return True  # skip: go on with the next shard

    pipeline = wds.DataPipeline(lambda: iter([{"url": str(shard)}, {"url": str(shard)}]),
                                tario.tarfile_to_samples(handler=handler))
    keys = [s["__key__"] for s in pipeline]
    assert len(seen) == 2 and all("unexpected end of data" in s for s in seen)
    assert keys == ["a", "a"]  # a.npy + a.cls before the cut, from each shard
