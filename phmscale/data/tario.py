"""Reading tar shards fast: webdataset's `tarfile_to_samples` with a lean tar member reader.

webdataset reads a shard with Python's `tarfile` in stream mode, which builds a full TarInfo
per member (every field parsed, both checksums, a dozen method calls). A packed sample is 2
members (`.npy` + `.cls`), so for small samples (8×8 digits) the tar headers cost as much as
the quickstart's whole training step, and on a small CPU the loader worker doing it takes that
CPU from the step (`phmscale bench step`). This reader parses only what a sample needs — name,
size, type, checksum — from each 512-byte header, an order of magnitude less per member
(figures: docs/benchmarks.md, "Tar reader").

Same members, names and errors as tarfile's stream mode for what shards hold:
- regular files (types '0', '\\0', '7'); other types (directories, links, devices) are skipped,
  as webdataset skips every non-regular member, and carry no data, as tarfile reads them;
- ustar names with a prefix; GNU long names ('L'); pax extended headers ('x': `path`, `size`;
  'g': the same for every later member), the outermost of a chain winning as in tarfile;
- sparse members (GNU 'S', pax GNU.sparse.*) are a ReadError: shards never hold them;
- of the numeric fields only the size is parsed (tarfile checks all); the checksum, which
  tarfile checks too, is what catches a corrupt header;
- the end: a zero block, or the stream ending at a header boundary; a bad checksum or a
  partial header ends the archive too, except at the very start ("empty file", "bad
  checksum": tarfile.ReadError), exactly as tarfile does, so a shortfall against shards.json
  is what reports a cut shard (epoch.py);
- a member whose data the stream cuts short raises tarfile.ReadError("unexpected end of
  data");
- compressed shards (gzip, bzip2, xz) go to webdataset's own tarfile reader, unchanged.

Only the member iterator is ours: opening URLs (`url_opener`: local files, pipe:, fsspec) and
grouping members into samples (`group_by_keys`) stay webdataset's.
"""

from __future__ import annotations

import re
import tarfile
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from phmscale.data.urls import webdataset

webdataset()  # the fsspec schemes in gopen's table before url_opener uses it
from webdataset import filters  # noqa: E402
from webdataset.handlers import reraise_exception  # noqa: E402
from webdataset.tariterators import group_by_keys, tar_file_iterator, url_opener  # noqa: E402

BLOCK = 512
_ZERO = bytes(BLOCK)
_COMPRESSED = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ")  # gzip, bzip2, xz magic
_REGULAR = (b"0", b"\0", b"7")
_EXTENSIONS = (b"L", b"K", b"x", b"X", b"g")
_NO_DATA = (b"1", b"2", b"3", b"4", b"5", b"6")  # links, devices, directories, fifos
_META = re.compile(r"__[^/]*__($|/)")  # webdataset's skip_meta: keys like __key__


def _number(field: bytes) -> int:
    """A numeric header field: octal text, or GNU base-256 (high bit set) for large values."""
    if field[0] & 0x80:
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _checksum_ok(header: bytes) -> bool:
    """tarfile accepts the unsigned or the signed sum with the checksum field as 8 spaces."""
    try:
        stored = _number(header[148:156])
    except ValueError:
        return False
    unsigned = sum(header) - sum(header[148:156]) + 8 * 32
    if stored == unsigned:
        return True
    high = sum(1 for b in header[:148] + header[156:] if b > 127)
    return stored == unsigned - 256 * high  # the same bytes read as int8


_PAX_RECORD = re.compile(rb"(\d+) ([^=]+)=")


def _pax(data: bytes) -> dict[str, str]:
    """Records 'LEN key=value\\n' of a pax extended header, parsed as tarfile does: the first
    record that does not match ends them."""
    out, pos = {}, 0
    while match := _PAX_RECORD.match(data, pos):
        length = int(match.group(1))
        if length == 0:
            raise tarfile.ReadError("invalid header")
        value = data[match.end(2) + 1:match.start(1) + length - 1]
        out[match.group(2).decode("utf-8", "surrogateescape")] = value.decode(
            "utf-8", "surrogateescape")
        pos += length
    return out


def _name(header: bytes, long_name: str | None, global_records: dict[str, str]) -> str:
    """The member's name: an extension header's, else a global pax path, else the ustar
    prefix + name fields."""
    if long_name is not None:
        return long_name
    if "path" in global_records:
        return global_records["path"]
    name = _text(header[0:100])
    prefix = _text(header[345:500]) if header[257:263] == b"ustar\0" else ""
    return prefix + "/" + name if prefix else name


class _Exact:
    """`read(n)` that returns n bytes unless the stream ends, with `head` pushed back in front.

    tarfile's stream reader loops until it has what it asked for, and so must this one: a raw
    stream may return less (fsspec's HTTP stream gives what the socket has), and taking a short
    header or payload for the end of the shard would lose its last samples silently.
    """

    def __init__(self, head: bytes, stream: IO[bytes]):
        self.head, self.stream = head, stream

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            out, self.head = self.head + self.stream.read(), b""
            return out
        parts, want = [self.head[:size]], size - len(self.head[:size])
        self.head = self.head[size:]
        while want > 0:
            chunk = self.stream.read(want)
            if not chunk:
                break
            parts.append(chunk)
            want -= len(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)


def _bad_header(header: bytes, first: bool, extended: bool, reason: str = "bad checksum"
                ) -> None:
    """tarfile's rule: a bad first header, or a bad one after an extension header, is a
    ReadError; a bad one anywhere else ends the archive (the caller returns)."""
    if first or extended:
        raise tarfile.ReadError(
            ("empty file" if first else "empty header") if not header
            else "truncated header" if len(header) < BLOCK
            else "end of file header" if header == _ZERO else reason)


def tar_members(stream: IO[bytes]) -> Iterator[tuple[str, bytes]]:
    """(name, data) of every regular member of an uncompressed tar stream (read through an
    `_Exact`, or anything whose read(n) returns n bytes until the end)."""
    read = stream.read
    first = True
    # Extension headers ('L', 'x') before a member: the outermost name wins, as in tarfile
    # (each applies its own after the recursion that reads the rest of the chain).
    long_name: str | None = None
    pax_size: int | None = None
    global_records: dict[str, str] = {}  # pax 'g': applied under every later member's own
    extended = False  # the last header was an extension of the next one
    while True:
        header = read(BLOCK)
        if header == _ZERO and not extended:
            return  # end-of-archive marker
        if len(header) < BLOCK or header == _ZERO or not _checksum_ok(header):
            _bad_header(header, first, extended)
            return
        kind = header[156:157]
        try:
            size = _number(header[124:136])
        except ValueError:  # tarfile: InvalidHeaderError
            _bad_header(header, first, extended, "invalid header")
            return
        first = False
        is_extension = kind in _EXTENSIONS
        if not is_extension:
            if pax_size is not None:
                size = pax_size
            elif "size" in global_records:
                size = int(global_records["size"])
        # tarfile skips no data after a link, directory or device header, whatever its size
        padded = 0 if kind in _NO_DATA else -(-size // BLOCK) * BLOCK
        payload = read(padded) if padded else b""
        if len(payload) < min(size, padded):
            raise tarfile.ReadError("unexpected end of data")
        if len(payload) < padded:  # the data is whole, the padding after it is not
            if kind in _REGULAR:
                yield _name(header, long_name, global_records), payload[:size]
            raise tarfile.ReadError("unexpected end of data")
        data = payload[:size] if padded != size else payload
        extended = is_extension
        if kind == b"L":  # GNU long name of the next member
            long_name = long_name if long_name is not None else _text(data)
            continue
        if kind in (b"x", b"X", b"g"):  # pax header of the next member, or of all later ones
            records = _pax(data)
            if any(key.startswith("GNU.sparse.") for key in records):
                raise tarfile.ReadError("GNU sparse members are not supported in shards")
            if kind == b"g":
                global_records.update(records)
                continue
            if long_name is None and "path" in records:
                long_name = records["path"]
            if pax_size is None and "size" in records:
                pax_size = int(records["size"])
            continue
        if kind == b"K":  # GNU long link name: nothing for us
            continue
        if kind == b"S":
            raise tarfile.ReadError("GNU sparse members are not supported in shards")
        name = _name(header, long_name, global_records)
        long_name, pax_size = None, None
        if kind in _REGULAR and not name.endswith("/"):
            yield name, data


def tar_file_iterator_fast(fileobj: IO[bytes]) -> Iterator[dict[str, Any]]:
    """webdataset's `tar_file_iterator` (same dicts, same skipped names), on `tar_members`.
    Errors propagate to `tar_file_expander`, which hands each to the handler once."""
    head = fileobj.read(6)
    if head.startswith(_COMPRESSED):  # webdataset's own reader, tarfile inside
        yield from tar_file_iterator(_Exact(head, fileobj), handler=reraise_exception)
        return
    try:
        for name, data in tar_members(_Exact(head, fileobj)):
            if "/" not in name and name.startswith("__") and name.endswith("__"):
                continue  # webdataset's metadata members
            if _META.match(name):
                continue
            yield {"fname": name, "data": data}
    except Exception as exn:
        if exn.args:  # as webdataset annotates it (ReadState.handler splits on " @ ")
            exn.args = (f"{exn.args[0]} @ {fileobj}",) + exn.args[1:]
        raise


def tar_file_expander(data: Iterable[dict[str, Any]],
                      handler: Callable[[Exception], bool] = reraise_exception,
                      ) -> Iterator[dict[str, Any]]:
    """webdataset's `tar_file_expander` on the fast iterator: each opened shard's members,
    tagged with its URL, then an empty dict that ends the shard's last sample. After a tar
    error the stream position is unknown: the handler decides whether the next shard is read
    (True) or the pipeline stops (False, or it raises)."""
    for source in data:
        url = source["url"]
        try:
            for sample in tar_file_iterator_fast(source["stream"]):
                sample["__url__"] = url
                yield sample
        except Exception as exn:  # noqa: BLE001 - the handler decides, as in webdataset
            exn.args = exn.args + (source.get("stream"), url)
            if not handler(exn):
                break
        yield {}


def tarfile_samples(src: Iterable[dict[str, Any]],
                    handler: Callable[[Exception], bool] = reraise_exception,
                    ) -> Iterator[dict[str, Any]]:
    streams = url_opener(src, handler=handler)
    files = tar_file_expander(streams, handler=handler)
    return group_by_keys(files, handler=handler)


# A pipeline stage, called like webdataset's: tarfile_to_samples(handler=…).
tarfile_to_samples = filters.pipelinefilter(tarfile_samples)
