"""A tiny job and deterministic in-memory data shared by the engine tests."""

from __future__ import annotations

from typing import Any

import torch

from phmscale.spec import JobSpec, load_job_dict
from phmscale.train.memory import InMemorySource


def tiny_spec(tmp_path: Any, **overrides: Any) -> JobSpec:
    sets = [f"{k}={v}" for k, v in overrides.items()]
    return load_job_dict(
        {
            "name": "tiny",
            "model": {"algebra": "phm", "n": 2, "dim": 16, "depth": 1, "heads": 2,
                      "mlp_ratio": 2, "input_shape": [1, 8, 8], "patch_size": 4},
            "data": {"train": "builtin:digits", "batch_size": 8, "loader_workers": 0},
            "train": {"steps": 20, "eval_every": 20, "log_every": 1,
                      "optimizer": {"name": "adamw", "lr": 1e-2},
                      "schedule": {"warmup_steps": 2}, "zero_stage": 1},
            "checkpoint": {"dir": str(tmp_path / "ckpt"), "every": 5},
        },
        sets,
    )


def global_batches(count: int, batch: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`count` batches of digits-shaped inputs with a learnable label rule."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        x = torch.rand(batch, 1, 8, 8, generator=g)
        y = (x.mean(dim=(1, 2, 3)) * 40).long() % 10  # a function of x: learnable
        out.append((x, y))
    return out


def rank_source(batches: list, rank: int, world: int) -> InMemorySource:
    """Rank r gets rows [r·b, (r+1)·b) of every global batch of world·b rows."""
    out = []
    for x, y in batches:
        b = x.shape[0] // world
        out.append((x[rank * b:(rank + 1) * b], y[rank * b:(rank + 1) * b]))
    return InMemorySource(out)


def train_one_rank(spec: JobSpec, batches: list, hooks: Any, **kw: Any) -> Any:
    """`train` in this process as the only rank: every batch to train on, the first two to
    validate on; returns the TrainResult."""
    from phmscale.train.loop import train

    return train(spec, hooks=hooks, train_source=rank_source(batches, 0, 1),
                 val_source=rank_source(batches[:2], 0, 1), use_gpu=False, **kw)


class Recorder:
    """Hooks that keep every metric the loop reports."""

    def __init__(self) -> None:
        from phmscale.train.hooks import Hooks

        self.losses: dict[int, float] = {}
        self.evals: dict[int, dict[str, float]] = {}
        self.checkpoints: list[int] = []
        recorder = self

        class _H(Hooks):
            def on_metrics(self, step, metrics):  # noqa: ANN001
                recorder.losses[step] = metrics["loss"]

            def on_eval(self, step, metrics):  # noqa: ANN001
                recorder.evals[step] = metrics

            def on_checkpoint(self, step, path):  # noqa: ANN001
                recorder.checkpoints.append(step)

        self.hooks = _H()


def run_two_ranks(out: Any, zero: int, global_batch: int) -> None:
    """`tests.train._worker` as ranks 0 and 1 of a gloo group, as a launcher would start them;
    asserts both exit 0."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.conftest import ROOT, free_port

    port = free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "tests.train._worker", str(Path(out)), str(zero),
             str(global_batch)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs[0][-3000:] + outputs[1][-3000:]
