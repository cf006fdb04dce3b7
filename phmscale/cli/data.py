"""`phmscale data pack | verify | inspect | tokenizer train`: make, check and look at WebDataset shards.

Thin: parse, call phmscale.data, print. phmscale.data (and with it torch, via webdataset) is
imported inside each command so that other verbs do not pay for it at start-up.
"""

from __future__ import annotations

import io
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()

data_app = typer.Typer(
    name="data",
    help="Pack datasets into WebDataset shards, verify shards, inspect a packed dataset.",
    no_args_is_help=True,
)


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f}"


@data_app.command()
def pack(
    source: str = typer.Argument(
        ..., help="A folder or file to pack, or builtin:digits|mnist1d|pystdlib."
    ),
    out: Path = typer.Argument(..., help="Output folder: {split}-000000.tar … and shards.json."),
    format: str | None = typer.Option(
        None, "--format", "-f",
        help="image-folder | cifar | mnist-idx | npz | text (default: guessed from the layout).",
    ),
    split: str | None = typer.Option(
        None, "--split",
        help="Splits as name=fraction, e.g. train=0.9,val=0.1 (default: the source's own "
        "train/test split, else train=0.9,val=0.1).",
    ),
    shard_size: int | None = typer.Option(
        None, "--shard-size", min=1, help="At most this many samples per shard (default 1000)."
    ),
    shards: int | None = typer.Option(
        None, "--shards", min=1,
        help="Exactly this many shards per split (at least ranks × loader workers).",
    ),
    chunk_len: int = typer.Option(
        513, "--chunk-len", min=2,
        help="text: bytes per sample, or tokens with --tokenizer (model.seq_len + 1 or more).",
    ),
    tokenizer: Path | None = typer.Option(
        None, "--tokenizer",
        help="text: a tokenizer.json; samples become npy token ids (uint16 for vocabularies up "
        "to 65,536, else uint32) instead of raw bytes.",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for the split and the sample order."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a packed OUT."),
) -> None:
    """Pack a dataset into deterministic WebDataset shards plus a shards.json index.

    pystdlib's size is capped by $PHMSCALE_PYSTDLIB_BYTES (default 4000000).
    """
    from phmscale.data import builtin_source, detect_format, open_source
    from phmscale.data import pack as pack_source
    from phmscale.errors import InvalidInputError

    if tokenizer is not None:
        from phmscale.data.sources import tokenized_source
        from phmscale.data.tokenizer import load_tokenizer

        if (format or "text") != "text" or (source.startswith("builtin:") and split):
            raise InvalidInputError("--tokenizer packs text: use --format text (or "
                                    "builtin:pystdlib, which has its own split)")
        name, text = _text_of(source)
        data = tokenized_source(name, text, load_tokenizer(tokenizer, "--tokenizer"),
                                split=split or ("train=0.9,val=0.1" if name == "pystdlib"
                                                else None), chunk_len=chunk_len)
        shards = shards or (None if shard_size or name != "pystdlib" else 8)
    elif source.startswith("builtin:"):
        if split or format:
            raise InvalidInputError(f"{source} has its own format and split: drop --split/--format")
        data = builtin_source(source.removeprefix("builtin:"), seed=seed)
        shards = shards or (None if shard_size else 8)
    else:
        path = Path(source).expanduser()
        fmt = format or detect_format(path)
        data = open_source(fmt, path, split=split, seed=seed, chunk_len=chunk_len)
    index = pack_source(data, out, shard_size=shard_size, shards=shards, seed=seed,
                        overwrite=overwrite, progress=True)
    table = Table(title=f"{out}: {data.name}, task {data.task}", title_justify="left")
    for column in ("split", "shards", "samples", "MB"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for name, entry in sorted(index["splits"].items()):
        size = sum(index["shards"][s]["bytes"] for s in entry["shards"])
        table.add_row(name, str(len(entry["shards"])), str(entry["count"]), _mb(size))
    console.print(table)


def _text_of(source: str) -> tuple[str, bytes]:
    """(name, bytes) of a text source: a file, a folder of files, or builtin:pystdlib."""
    from phmscale.data.builtins import pystdlib_bytes, pystdlib_max_bytes
    from phmscale.data.sources import read_text_files
    from phmscale.errors import InvalidInputError

    if source == "builtin:pystdlib":
        return "pystdlib", pystdlib_bytes(pystdlib_max_bytes())
    if source.startswith("builtin:"):
        raise InvalidInputError(f"{source} is not text: the text built-in is builtin:pystdlib")
    path = Path(source).expanduser()
    if not path.exists():
        raise InvalidInputError(f"{path}: no such file or directory")
    return "text", read_text_files(path)


tokenizer_app = typer.Typer(
    name="tokenizer", help="Train a byte-level BPE tokenizer for text data.",
    no_args_is_help=True,
)
data_app.add_typer(tokenizer_app, name="tokenizer")


@tokenizer_app.command("train")
def tokenizer_train(
    source: str = typer.Argument(
        ..., help="A text file, a folder of text files (all, sorted by path), or "
        "builtin:pystdlib."),
    vocab_size: int = typer.Option(..., "--vocab-size", min=257,
                                   help="Token ids in all (256 bytes + merges)."),
    out: Path = typer.Option(Path("tokenizer.json"), "--out", help="tokenizer.json to write."),
) -> None:
    """Train a byte-level BPE (deterministic: the same text gives the same file); pack with
    `phmscale data pack SRC OUT --format text --tokenizer tokenizer.json` and name it in the job
    as data.tokenizer (model.vocab_size = its size)."""
    from phmscale.data.tokenizer import train_bpe

    _, text = _text_of(source)
    tok = train_bpe(text.decode("utf-8", errors="replace"), vocab_size, out)
    ids = tok.encode(text[:1_000_000].decode("utf-8", errors="replace"))
    sample = min(len(text), 1_000_000)
    console.print(f"{out}: {tok.vocab_size} tokens, sha256 {tok.sha256[:12]}; "
                  f"{sample / max(len(ids), 1):.2f} bytes per token on the first "
                  f"{_mb(sample)} MB of {source}", highlight=False)


@data_app.command()
def verify(
    targets: list[str] = typer.Argument(
        ..., help="Packed folders, shards.json files, builtin:<name>, patterns or URLs."
    ),
) -> None:
    """Read every shard; exit 2 listing the problems (truncation, tar errors, non-adjacent or
    incomplete samples, counts/sizes/checksums that disagree with shards.json)."""
    from phmscale.data.verify import verify as verify_shards
    from phmscale.errors import InvalidInputError

    reports = []
    for target in targets:
        reports += verify_shards(target, progress=console.is_terminal)[0]
    table = Table(title="shards", title_justify="left")
    for column in ("shard", "samples", "MB", "sha256", "status"):
        table.add_column(column, justify="right" if column in ("samples", "MB") else "left")
    for r in reports:
        status = "[green]ok[/]" if not r.problems else f"[red]{len(r.problems)} problem(s)[/]"
        table.add_row(r.url, str(r.samples), _mb(r.bytes), r.sha256[:12], status)
    console.print(table)
    bad = [r for r in reports if r.problems]
    if bad:
        lines = [f"  {r.url}: {p}" for r in bad for p in r.problems]
        raise InvalidInputError(
            f"{len(bad)} of {len(reports)} shard(s) have problems:\n" + "\n".join(lines))
    total = sum(r.samples for r in reports)
    console.print(f"all {len(reports)} shard(s) ok: {total} samples, "
                  f"{_mb(sum(r.bytes for r in reports))} MB")


def _describe_sample(sample: dict) -> str:
    import numpy as np

    parts = []
    for key in sorted(k for k in sample if not k.startswith("__")):
        data = sample[key]
        if key == "npy":
            arr = np.load(io.BytesIO(data), allow_pickle=False)
            parts.append(f"npy {arr.dtype}{list(arr.shape)}")
        elif key == "cls":
            parts.append(f"cls {data.decode(errors='replace')}")
        elif key in ("bin", "txt"):
            parts.append(f"{key} {len(data)} B {data[:40]!r}")
        else:
            parts.append(f"{key} {len(data)} B")
    return ", ".join(parts)


@data_app.command()
def inspect(
    target: str = typer.Argument(
        ..., help="A packed folder, shards.json, builtin:<name> or pattern."
    ),
    samples: int = typer.Option(3, "--samples", "-n", min=0, help="Samples to show."),
) -> None:
    """Print the index summary of a packed dataset and its first few samples."""
    from phmscale.data.urls import webdataset
    from phmscale.data.verify import targets

    wds = webdataset()  # with the fsspec schemes registered: shards may be s3://, gs://, …

    urls, index, folder = targets(target)
    if index:
        info = Table(title=f"{folder}/shards.json", show_header=False, title_justify="left")
        info.add_column("field", style="bold cyan")
        info.add_column("value")
        for key, value in sorted(index["dataset"].items()):
            if key == "classes" and value and len(value) > 12:
                value = value[:12] + [f"… {len(value)} in all"]
            info.add_row(key, str(value))
        for name, entry in sorted(index["splits"].items()):
            size = sum(index["shards"][s]["bytes"] for s in entry["shards"])
            info.add_row(f"split {name}", f"{len(entry['shards'])} shards, {entry['count']} "
                                          f"samples, {_mb(size)} MB")
        console.print(info)
    else:
        console.print(f"{len(urls)} shard(s), no shards.json beside them")
    if samples:
        table = Table(title=f"first {samples} sample(s) of {urls[0]}", title_justify="left")
        table.add_column("key")
        table.add_column("files")
        pipeline = wds.DataPipeline(lambda: iter([{"url": urls[0]}]), wds.tarfile_to_samples())
        for sample in pipeline:
            table.add_row(sample["__key__"], _describe_sample(sample))
            if table.row_count >= samples:
                break
        console.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
