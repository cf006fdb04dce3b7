"""`phmscale data verify`: read every shard and say what is wrong with each.

Per shard, in one sequential read (webdataset's tar iterator over a read-through tap that
hashes and counts the bytes):

- tar errors the iterator reports (bad member data, unexpected end of data);
- truncation: a size that is not a multiple of 512, no end-of-archive marker (the last 1024
  bytes must be zero), or non-zero bytes after the last member — Python's stream reader (under
  webdataset's iterator) treats a corrupt header as the end of the archive and would silently
  lose the rest of the shard; Python's tarfile parses single header blocks to find that point;
- samples whose files are not adjacent (one __key__ in two separate runs: the loader would see
  two partial samples), duplicate files in a sample, and samples missing a key (the keys in
  shards.json, else the most common key set across the shards);
- sample count, byte size and sha256 that disagree with shards.json.
"""

from __future__ import annotations

import hashlib
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Any

from rich.console import Console
from rich.progress import Progress

from phmscale.data import urls as U
from phmscale.data.index import Index, lookup_counts, read_index
from phmscale.data.prepare import ensure_builtin
from phmscale.data.shards import packed_folder
from phmscale.errors import InvalidInputError

_TAIL = 1024  # a tar ends with two zero 512-byte blocks
_WINDOW = 3 * 10240  # the tar reader's read-ahead record is 10240 bytes; keep three


@dataclass
class ShardReport:
    """What one shard holds and what is wrong with it."""

    url: str
    samples: int = 0
    bytes: int = 0
    sha256: str = ""
    problems: list[str] = field(default_factory=list)
    keysets: list[tuple[str, frozenset[str]]] = field(default_factory=list, repr=False)


class _Tap:
    """Read-through wrapper: sha256, size, the last 1024 bytes, a window of the last 30 KiB
    read before `drain()`, and the non-zero bytes read after it."""

    def __init__(self, stream: IO[bytes]):
        self.stream, self.sha, self.size = stream, hashlib.sha256(), 0
        self.tail, self.head, self.marked, self.nonzero_after = b"", b"", False, 0
        self.window, self.window_start = bytearray(), 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.sha.update(data)
        self.size += len(data)
        if len(self.head) < 2:
            self.head += data[:2]
        self.tail = (self.tail + data)[-_TAIL:]
        if self.marked:
            self.nonzero_after += len(data) - data.count(0)
        else:
            self.window += data
            cut = len(self.window) - _WINDOW
            if cut > 0:
                del self.window[:cut]
                self.window_start += cut
        return data

    def drain(self) -> None:
        self.marked = True
        while self.read(1 << 20):
            pass

    def nonzero_after_members(self, last_name: str, last_size: int) -> int | None:
        """Non-zero bytes after the archive's last member (None if it cannot be located).

        The tar reader reads ahead in 10 KiB records and treats a corrupt header as the end of
        the archive, so where it stopped is not visible from outside. Find the last yielded
        member's header in the window, step over any valid headers the iterator skipped
        (directories, PAX records), and count what follows: a sound archive has only zeros.
        """
        name = last_name.encode()
        if len(name) > 100:
            return None
        first = (-self.window_start) % 512  # window offsets of 512-aligned file offsets
        pos = None
        for off in range(first + (len(self.window) - first) // 512 * 512 - 512, first - 1, -512):
            block = bytes(self.window[off : off + 512])
            if block[: len(name)] == name and block[len(name) : len(name) + 1] in (b"\0", b""):
                if _header(block) is not None:
                    pos = off + 512 + -(-last_size // 512) * 512
                    break
        if pos is None:
            return None
        while pos + 512 <= len(self.window):
            info = _header(bytes(self.window[pos : pos + 512]))
            if info is None:
                break
            pos += 512 + -(-info.size // 512) * 512
        rest = self.window[pos:]
        return len(rest) - rest.count(0) + self.nonzero_after


def _header(block: bytes) -> tarfile.TarInfo | None:
    """A valid tar header block, parsed (Python's tarfile: truncation detection only)."""
    try:
        return tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return None


def _read_shard(url: str) -> ShardReport:
    report = ShardReport(url)
    try:
        stream = U.open_stream(url)
    except Exception as error:  # noqa: BLE001 - any failure to open is the report
        report.problems.append(f"cannot open: {error}")
        return report
    tap, errors = _Tap(stream), []

    def handler(exn: Exception) -> bool:
        errors.append(str(exn.args[0]).split(" @ ")[0] if exn.args else repr(exn))
        return False  # after a tar error the stream position is unknown: stop reading

    runs: list[tuple[str, set[str]]] = []
    seen: set[str] = set()
    last = ("", 0)
    from webdataset.tariterators import base_plus_ext, tar_file_iterator  # torch: on use

    try:
        for member in tar_file_iterator(tap, handler=handler):
            last = (member["fname"], len(member["data"]))
            key, suffix = base_plus_ext(member["fname"])
            if key is None:
                report.problems.append(f"file {member['fname']!r} has no extension: it belongs "
                                       f"to no sample")
                continue
            if not runs or runs[-1][0] != key:
                if key in seen:
                    report.problems.append(f"sample {key!r}: its files are not adjacent (the key "
                                           f"appears in two separate runs)")
                seen.add(key)
                runs.append((key, set()))
            if suffix.lower() in runs[-1][1]:
                report.problems.append(f"sample {key!r}: duplicate file .{suffix}")
            runs[-1][1].add(suffix.lower())
        tap.drain()
    except Exception as error:  # noqa: BLE001 - a tar error escaping the iterator
        errors.append(f"{type(error).__name__}: {error}")
    finally:
        stream.close()
    report.problems += [f"tar error: {e}" for e in errors]
    report.samples, report.bytes, report.sha256 = len(runs), tap.size, tap.sha.hexdigest()
    report.keysets = [(k, frozenset(s)) for k, s in runs]
    if not errors and tap.head != b"\x1f\x8b":  # byte checks apply to plain (not gzipped) tars
        if tap.size % 512:
            report.problems.append(f"truncated: {tap.size} bytes is not a whole number of "
                                   f"512-byte tar blocks")
        elif tap.tail.count(0) != _TAIL:
            report.problems.append("truncated: no end-of-archive marker (two zero blocks)")
        after = tap.nonzero_after_members(*last) if last[0] else None
        after = tap.nonzero_after if after is None else after
        if after:
            report.problems.append(f"the tar reader stopped early: {after} non-zero bytes "
                                   f"follow (a corrupt header hides the rest of the shard)")
    return report


def targets(target: str) -> tuple[list[str], Index | None, str | None]:
    """The shard URLs a verify/inspect target names, its index, and the index's folder."""
    folder = (str(ensure_builtin(target.removeprefix("builtin:"), None))
              if target.startswith("builtin:") else packed_folder(target))
    if folder is not None:
        index = read_index(folder)
        if index is None:
            raise InvalidInputError(f"no shards.json in {folder}: name the shards with a pattern")
        return [U.join(folder, name) for name in sorted(index["shards"])], index, folder
    urls = U.expand(target)
    if not urls:
        raise InvalidInputError(f"{target!r} matches no shards")
    _, index = lookup_counts(urls)
    return urls, index, U.dirname(urls[0]) if index else None


def verify(target: str, progress: bool = False) -> tuple[list[ShardReport], Index | None]:
    """Read every shard `target` names (a packed folder, shards.json, builtin:<name>, pattern
    or URL) and report each one's problems."""
    urls, index, _ = targets(target)
    reports = []
    with Progress(console=Console(stderr=True), disable=not progress, transient=True) as bar:
        for url in bar.track(urls, description="verifying"):
            reports.append(_read_shard(url))
    entries = index["shards"] if index else {}
    for report in reports:
        entry = entries.get(U.basename(report.url))
        if entry is None or not report.sha256:  # not in the index, or could not be opened
            continue
        for what, got in (("count", report.samples), ("bytes", report.bytes),
                          ("sha256", report.sha256)):
            if entry.get(what) is not None and entry[what] != got:
                report.problems.append(f"{what} {got} disagrees with shards.json ({entry[what]})")
    _check_keys(reports, index)
    return reports, index


def _check_keys(reports: list[ShardReport], index: Index | None) -> None:
    """Samples missing keys: against shards.json's keys, else the most common key set."""
    expected: frozenset[str] | None = None
    if index and index.get("dataset", {}).get("keys"):
        expected = frozenset(index["dataset"]["keys"])
    else:
        sets: Counter[frozenset[str]] = Counter(s for r in reports for _, s in r.keysets)
        expected = sets.most_common(1)[0][0] if sets else None
    if not expected:
        return
    for report in reports:
        bad = [(k, sorted(expected - s)) for k, s in report.keysets if expected - s]
        if bad:
            listed = "; ".join(f"{k!r} lacks .{', .'.join(m)}" for k, m in bad[:3])
            more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
            report.problems.append(f"{len(bad)} sample(s) missing keys: {listed}{more}")


def verify_or_raise(target: str, progress: bool = False) -> tuple[list[ShardReport], Any]:
    """verify(); an InvalidInputError listing every problem (with its shard) if there is one."""
    reports, index = verify(target, progress=progress)
    lines = [f"  {r.url}: {p}" for r in reports for p in r.problems]
    if lines:
        bad = sum(1 for r in reports if r.problems)
        raise InvalidInputError(
            f"{bad} of {len(reports)} shard(s) in {target!r} have problems:\n" + "\n".join(lines)
        )
    return reports, index
