"""`summarize` and `phmscale model summary` through the real CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from phmscale.models import bits_per_byte, memory_per_worker, summarize
from phmscale.spec import load_job

ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).with_name("phmscale"))


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_bits_per_byte() -> None:
    assert bits_per_byte(math.log(256)) == pytest.approx(8.0)  # uniform over 256 bytes


def test_memory_per_worker_zero_stages() -> None:
    p = 1000
    m1 = memory_per_worker(p, p, "fp32", zero_stage=1, workers=2)
    assert (m1.params_bytes, m1.grads_bytes, m1.optimizer_bytes) == (4000, 4000, 4000)
    m0 = memory_per_worker(p, p, "fp32", zero_stage=0, workers=2)
    assert m0.optimizer_bytes == 8000
    m2 = memory_per_worker(p, p, "bf16", zero_stage=2, workers=4)
    assert (m2.params_bytes, m2.grads_bytes, m2.optimizer_bytes) == (2000, 500, 3000)
    m3 = memory_per_worker(p, p, "bf16", zero_stage=3, workers=4)
    assert m3.total_bytes == 16 * p // 4  # ZeRO paper: 16 B per parameter, all sharded


def test_summarize_job() -> None:
    s = summarize(load_job(ROOT / "jobs/phm-vit-digits-n4.yaml"))
    assert s.params_total == s.params_trainable == sum(s.params_by_kind.values())
    assert 3 < s.savings_ratio < 4 and 3.5 < s.algebra_layer_savings < 4
    assert s.flops_rel_diff < 0.02
    d = s.to_dict()
    assert d["memory"]["total_bytes"] == s.memory.total_bytes
    json.dumps(d)


def test_cli_summary_table() -> None:
    result = cli("model", "summary", "jobs/resnet20-digits-quaternion.yaml")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "parameters" in out and "savings" in out and "dense twin" in out
    assert "69,818" in out  # 272,186 / 4 in the convs, real stem and head, BN


def test_cli_summary_json_with_override() -> None:
    result = cli("model", "summary", "jobs/phm-vit-digits-n4.yaml", "--set", "model.n=2",
                 "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["n"] == 2 and data["params_total"] < data["twin_params"]
    assert data["flops_rel_diff"] < 0.02 and data["savings_ratio"] > 1


def test_cli_summary_bad_job_exits_2() -> None:
    result = cli("model", "summary", "jobs/phm-vit-digits-n4.yaml", "--set", "model.dpth=3")
    assert result.returncode == 2
    assert "model.depth" in result.stderr
