"""Text with a tokenizer, end to end as users run it: `data tokenizer train`, `data pack
--tokenizer`, a causal LM trained on the token shards with `phmscale run` (val_bpb from the
bytes each token covers), the vocab-size and missing-file checks (exit 2), and `export` +
`generate` + the MLflow pyfunc round-tripping text through the export's tokenizer.json."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from phmscale.data.builtins import pystdlib_bytes
from tests.conftest import run_cli

JOB = {
    "name": "lm-bpe-tiny",
    "model": {"kind": "phm_transformer", "algebra": "phm", "n": 2, "task": "causal_lm",
              "vocab_size": 512, "seq_len": 32, "dim": 32, "depth": 1, "heads": 2,
              "mlp_ratio": 2},
    "data": {"train": "packed", "val": "packed", "tokenizer": "tok.json", "batch_size": 8,
             "loader_workers": 0},
    "train": {"steps": 4, "eval_every": 4, "eval_batches": 2, "log_every": 2,
              "optimizer": {"name": "adamw", "lr": 3.0e-3}, "zero_stage": 0},
    "checkpoint": {"every": 4},
}


def _ok(result) -> str:  # noqa: ANN001
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _row(stdout: str, name: str) -> float:
    return float(re.search(rf"{name}\s+│\s+([0-9.]+)", stdout).group(1))


@pytest.mark.filterwarnings("ignore:Add type hints:UserWarning")  # mlflow, on predict
def test_bpe_trains_packs_trains_a_model_and_generates(tmp_path: Path) -> None:
    text = tmp_path / "text"
    text.mkdir()
    data = pystdlib_bytes(120_000)
    (text / "a.py").write_bytes(data[:60_000])
    (text / "b.py").write_bytes(data[60_000:])
    _ok(run_cli("data", "tokenizer", "train", str(text), "--vocab-size", "512", "--out",
                "tok.json", cwd=tmp_path))
    _ok(run_cli("data", "pack", str(text), "packed", "--format", "text", "--tokenizer",
                "tok.json", "--chunk-len", "33", cwd=tmp_path))
    dataset = json.loads((tmp_path / "packed/shards.json").read_text())["dataset"]
    assert dataset["task"] == "causal_lm" and dataset["vocab_size"] == 512
    assert dataset["dtype"] == "uint16" and dataset["chunk_len"] == 33
    assert set(dataset["counts"]) == {"train", "val"} and len(dataset["tokenizer_sha256"]) == 64

    (tmp_path / "job.yaml").write_text(yaml.safe_dump(JOB))
    out = _ok(run_cli("run", "job.yaml", cwd=tmp_path))
    loss, bpb = _row(out, "val_loss"), _row(out, "val_bpb")
    # per byte < per token: a 512-token BPE covers ~2.5 bytes per token on this text
    assert 1.5 < (loss / math.log(2)) / bpb < 4, (loss, bpb)

    wrong = run_cli("validate", "job.yaml", "--set", "model.vocab_size=256", cwd=tmp_path)
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    assert re.search(r"model.vocab_size is 256 but data.tokenizer '.*tok.json' has 512",
                     wrong.stderr), wrong.stderr
    missing = run_cli("validate", "job.yaml", "--set", "data.tokenizer=gone.json", cwd=tmp_path)
    assert missing.returncode == 2 and "data.tokenizer: 'gone.json' does not exist" in \
        missing.stderr, missing.stderr

    _ok(run_cli("export", "job.yaml", "--out", "exp", cwd=tmp_path))
    assert (tmp_path / "exp/tokenizer.json").read_bytes() == (tmp_path / "tok.json").read_bytes()
    prompt = "def naïve(x):"  # non-ASCII: ids, not bytes, must round-trip it
    said = _ok(run_cli("generate", "exp", "--prompt", prompt, "--max-new-tokens", "8",
                       cwd=tmp_path))
    assert said.startswith(prompt) and len(said) > len(prompt) + 1

    from phmscale.tracking.model_registry import PhmscaleModel

    served = PhmscaleModel()
    served.load_context(SimpleNamespace(artifacts={"export": str(tmp_path / "exp")}))
    (continued,) = served.predict(None, [prompt], {"max_new_tokens": 8})
    assert prompt + continued + "\n" == said  # the CLI echoes a newline
