"""The dry run's memory and communication estimates (train/estimate.py) against what the
training itself measures (train/tensor_peak.py): within 25% of the measured tensor peak with
and without activation checkpointing, the `phmscale run --dry-run --json` fields, and the
ZeRO traffic of a GPT-2-small-sized LM, dense against PHM n = 4 (issue #22)."""

from __future__ import annotations

import json

import pytest
import torch

from phmscale.spec import JobSpec, load_job, load_job_dict
from phmscale.train.estimate import estimate_comm, estimate_memory
from phmscale.train.memory import InMemorySource
from tests.conftest import ROOT, run_cli

# Small enough for seconds on 2 cores, large enough that activations outweigh the states.
SMALL_LM = ["model.dim=64", "model.depth=3", "model.seq_len=256", "data.batch_size=2",
            "model.heads=2", "resources.workers=1", "train.steps=100"]


def _lm(*sets: str) -> JobSpec:
    return load_job(ROOT / "jobs/lm-pystdlib-phm-n4.yaml", [*SMALL_LM, *sets])


def _measured_peak(spec: JobSpec) -> int:
    from phmscale.train.loop import train

    g = torch.Generator().manual_seed(0)
    b, t = spec.data.batch_size, spec.model.seq_len
    source = InMemorySource([(torch.randint(0, 256, (b, t), generator=g),
                              torch.randint(0, 256, (b, t), generator=g)) for _ in range(2)])
    result = train(spec, train_source=source, val_source=source, use_gpu=False, max_steps=3,
                   dry_run=True)
    return result.peak_memory_bytes


def test_estimate_within_a_quarter_of_the_measured_tensor_peak():
    peaks = {}
    for on in ("false", "true"):
        spec = _lm(f"train.activation_checkpointing={on}")
        measured, estimate = _measured_peak(spec), estimate_memory(spec)
        ratio = estimate.peak_bytes / measured
        print(f"checkpointing {on}: measured {measured / 2**20:.2f} MiB, estimated "
              f"{estimate.peak_bytes / 2**20:.2f} MiB ({ratio:.3f}×)")
        assert 0.75 <= ratio <= 1.25, (on, measured, estimate.to_dict())
        peaks[on] = measured
    assert peaks["true"] < peaks["false"]  # checkpointing shows in the measurement too


def test_zero_stages_shard_what_the_zero_paper_says():
    """fp32 Adam, 4 ranks: stage 1 shards master + moments, 2 the gradients, 3 the weights."""
    by_stage = {s: estimate_memory(_lm(f"train.zero_stage={s}"), workers=4) for s in range(4)}
    p = by_stage[0].parameters // 4  # fp32: 4 B per parameter
    assert by_stage[0].master_weights == 0 and by_stage[0].optimizer_state == 8 * p
    assert by_stage[1].optimizer_state == pytest.approx(2 * p, abs=4)
    assert by_stage[1].master_weights == pytest.approx(p, abs=4)
    assert by_stage[1].gradients == 4 * p and by_stage[2].gradients == pytest.approx(p, abs=4)
    assert by_stage[3].parameters == pytest.approx(p, abs=4)
    bf16 = estimate_memory(_lm("train.precision=bf16", "train.zero_stage=0"), workers=1)
    assert bf16.parameters == 2 * p and bf16.master_weights == 4 * p  # 2 + 2 + 12 B


def gpt2_small(n: int) -> JobSpec:
    """GPT-2 small (12 × 768, 12 heads, 1,024 tokens, 50,257-entry BPE vocabulary; ~124M
    parameters dense) as a bf16 ZeRO-3 job on 8 ranks; the model section only matters."""
    model = {"kind": "phm_transformer", "algebra": "real" if n == 1 else "phm",
             "task": "causal_lm", "vocab_size": 50257, "seq_len": 1024, "dim": 768,
             "depth": 12, "heads": 12, "mlp_ratio": 4, "dropout": 0.0}
    if n > 1:
        model["n"] = n
    return load_job_dict({"name": f"gpt2-small-n{n}", "model": model,
                          "data": {"train": "/data/gpt2-tokens", "batch_size": 8},
                          "train": {"precision": "bf16", "zero_stage": 3},
                          "resources": {"workers": 8}}, [])


def test_gpt2_small_zero3_traffic_dense_vs_phm4():
    """ZeRO-3: 3·(W−1)/W·P·2 B per rank and step; n = 4 cuts the blocks' traffic 4-fold, the
    tied 50,257 × 768 embedding (38.6M values, not an algebra layer) moves in full."""
    dense, phm = estimate_comm(gpt2_small(1)), estimate_comm(gpt2_small(4))
    assert dense.parameters == pytest.approx(124e6, rel=0.05)
    assert dense.total_bytes == pytest.approx(3 * 7 / 8 * dense.parameters * 2, rel=1e-6)
    embeddings = 50257 * 768 + 1024 * 768
    blocks_ratio = (dense.parameters - embeddings) / (phm.parameters - embeddings)
    assert blocks_ratio == pytest.approx(4, rel=0.02)
    ratio = dense.total_bytes / phm.total_bytes
    print(f"GPT-2 small, bf16, ZeRO-3, 8 ranks: {dense.total_bytes / 2**30:.3f} GiB dense, "
          f"{phm.total_bytes / 2**30:.3f} GiB PHM n=4 per rank and step ({ratio:.2f}× less; "
          f"blocks {blocks_ratio:.2f}×)")
    assert ratio > 2


def test_dry_run_json_has_the_estimate_beside_the_measurement(tmp_path):
    sets = [a for s in SMALL_LM[:5] for a in ("--set", s)]
    result = run_cli("run", str(ROOT / "jobs/lm-pystdlib-phm-n4.yaml"), "--dry-run", "--json",
                     *sets, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = json.loads(result.stdout)  # stdout holds the JSON alone
    measured, estimated = out["peak_memory_bytes"], out["estimated_peak_memory_bytes"]
    assert 0.75 <= estimated / measured <= 1.25, out
    for key in ("parameters", "gradients", "optimizer_state", "master_weights", "activations",
                "activations_plain", "activations_checkpointed"):
        assert out["estimate"][key] > 0, key
    worker = out["per_worker"]  # the job's 2 workers, ZeRO-1
    assert worker["workers"] == 2 and worker["communication_bytes_per_step"] > 0
    assert worker["estimate"]["optimizer_state"] < out["estimate"]["optimizer_state"]
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_json_without_dry_run_is_refused(tmp_path):
    result = run_cli("run", str(ROOT / "jobs/quickstart.yaml"), "--json", cwd=tmp_path)
    assert result.returncode == 2
    assert "--dry-run" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
