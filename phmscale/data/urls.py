"""Shard locations: expanding patterns into URLs and opening them as byte streams.

Four forms reach the loader: local paths (brace and glob patterns), `pipe:` shell commands,
fsspec URLs (s3://, gs://, az://, http(s)://, memory:// …) and `builtin:` names (resolved in
`shards.py`). Opening goes through webdataset's `gopen` so that `wds.tarfile_to_samples` and
`wds.WebDataset` read every form; fsspec protocols are added to its scheme table (its documented
extension point) the first time this module is imported.
"""

from __future__ import annotations

import glob
import os
import re
from typing import IO, Any
from urllib.parse import urlparse

import braceexpand

from phmscale.errors import InvalidInputError

# Glob metacharacters: a pattern holding one of these is matched against existing files.
_GLOB_CHARS = re.compile(r"[*?\[]")

# Protocols handed to fsspec. http(s) only when aiohttp (fsspec's http backend) is importable;
# otherwise webdataset's own curl handler keeps them.
_FSSPEC_PROTOCOLS = (
    "s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "hdfs", "webhdfs", "memory",
)


def url_scheme(url: str) -> str:
    """'' for a local path, 'pipe' for a shell command, else the URL's scheme ('s3', 'file' …)."""
    if url.startswith("pipe:"):
        return "pipe"
    scheme = urlparse(url).scheme
    # One letter is a Windows drive (C:\…), not a scheme.
    return scheme if len(scheme) > 1 else ""


def is_local(url: str) -> bool:
    """True for paths on this machine's file system (plain or file://)."""
    return url_scheme(url) in ("", "file")


def local_path(url: str) -> str:
    """The file-system path of a local URL."""
    return urlparse(url).path if url_scheme(url) == "file" else url


def _fsspec_gopen(url: str, mode: str = "rb", bufsize: int = 8192, **_: Any) -> IO[bytes]:
    """webdataset gopen handler that opens any fsspec URL."""
    try:
        import fsspec
    except ImportError as error:  # pragma: no cover - fsspec ships with the package deps
        raise InvalidInputError(f"{url}: reading {url_scheme(url)}:// URLs needs fsspec") from error
    try:
        return fsspec.open(url, mode).open()
    except ImportError as error:
        raise InvalidInputError(
            f"{url}: fsspec has no backend for {url_scheme(url)}:// here ({error}); install it "
            f"(e.g. pip install s3fs / gcsfs / adlfs)"
        ) from error


_registered = False


def webdataset() -> Any:
    """webdataset, with the fsspec protocols in its gopen scheme table. Imported on first use,
    not with this module: webdataset imports torch (slow), which `phmscale validate` and
    `phmscale submit` never need."""
    global _registered
    import webdataset as wds

    if not _registered:
        protocols = list(_FSSPEC_PROTOCOLS)
        try:
            import aiohttp  # noqa: F401

            protocols += ["http", "https"]
        except ImportError:
            pass
        for protocol in protocols:
            wds.gopen_schemes[protocol] = _fsspec_gopen
        _registered = True
    return wds


def open_stream(url: str) -> IO[bytes]:
    """Open a shard (or any file) for reading, whatever its form."""
    return webdataset().gopen(url, "rb")


def brace_expand(pattern: str) -> list[str]:
    """Expand `{a,b}` and `{000..007}`; an unbalanced brace is an InvalidInputError."""
    try:
        return list(braceexpand.braceexpand(pattern))
    except braceexpand.UnbalancedBracesError as error:
        raise InvalidInputError(
            f"cannot parse the brace pattern {pattern!r} ({error}): write ranges as "
            f"{{000000..000007}} and lists as {{a,b}} with every '{{' closed"
        ) from error


def has_glob(pattern: str) -> bool:
    return bool(_GLOB_CHARS.search(pattern))


def expand(pattern: str) -> list[str]:
    """All shard URLs a pattern names, in order.

    Braces are expanded first; each resulting pattern with glob characters is matched against
    existing files (sorted, so every rank sees the same list). `pipe:` commands are brace-expanded
    only. Names without glob characters are kept whether or not they exist (check_data reports
    missing files; the loader's error policy handles them at read time).
    """
    urls: list[str] = []
    for item in brace_expand(pattern):
        scheme = url_scheme(item)
        if scheme == "":
            item = os.path.expanduser(item)
        if scheme == "pipe" or not has_glob(item):
            urls.append(item)
        elif scheme in ("", "file"):
            urls.extend(sorted(glob.glob(os.path.expanduser(local_path(item)))))
        else:
            urls.extend(_remote_glob(item))
    return urls


def _remote_glob(url: str) -> list[str]:
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    return sorted(fs.unstrip_protocol(p) for p in fs.glob(path))


def dirname(url: str) -> str:
    """The directory part of a path or URL (where its shards.json would be)."""
    if is_local(url):
        return os.path.dirname(os.path.abspath(os.path.expanduser(local_path(url))))
    return url.rsplit("/", 1)[0]


def basename(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def join(base: str, name: str) -> str:
    return os.path.join(base, name) if is_local(base) else f"{base.rstrip('/')}/{name}"
