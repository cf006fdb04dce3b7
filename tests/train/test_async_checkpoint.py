"""Checkpoints written in a background thread (train/async_save.py): the same files and
guarantees as a save in the loop, for every ZeRO stage."""

from __future__ import annotations

import threading
from collections import OrderedDict

import pytest
import torch

from phmscale.train import checkpoint as ckpt
from phmscale.train.async_save import snapshot
from tests.train._tiny import Recorder, global_batches, tiny_spec, train_one_rank


def test_snapshot_copies_tensors_and_containers_keeps_ties():
    w = torch.ones(3)
    state = {"module": OrderedDict(a=w, b=w), "groups": [{"lr": 0.1, "params": [0]}],
             "shape": torch.Size([3]), "none": None}
    snap = snapshot(state)
    w.add_(1)
    state["groups"][0]["lr"] = 0.5
    assert torch.equal(snap["module"]["a"], torch.ones(3))  # the loop's later step not seen
    assert snap["module"]["a"] is snap["module"]["b"]  # tied weights stay tied
    assert isinstance(snap["module"], OrderedDict) and snap["shape"] == torch.Size([3])
    assert snap["groups"][0]["lr"] == 0.1


@pytest.mark.parametrize("zero", [0, 3])
def test_async_save_resumes_like_sync(tmp_path, zero):
    """Stages 1-2 resume through tests/train/test_engine.py (async by default); here 0 and 3,
    and the files of an async save equal a sync save's."""
    batches = global_batches(20, 8)
    sets = {"train.zero_stage": zero, "checkpoint.every": 5, "train.steps": 10}
    runs = {}
    for mode in ("true", "false"):
        spec = tiny_spec(tmp_path / mode, **sets, **{"checkpoint.async_save": mode})
        rec = Recorder()
        result = train_one_rank(spec, batches, rec.hooks, max_steps=5)
        assert result.status == "completed" and rec.checkpoints == [5]
        rec2 = Recorder()
        resumed = train_one_rank(spec, batches, rec2.hooks)
        assert resumed.start_step == 5 and rec2.checkpoints == [10]
        runs[mode] = (rec2.losses, spec.checkpoint_dir)
    assert runs["true"][0] == pytest.approx(runs["false"][0], rel=1e-6)
    names = {m: sorted(p.name for p in (ckpt.latest_checkpoint(d).path).iterdir())
             for m, (_, d) in runs.items()}
    assert names["true"] == names["false"]


def test_loop_goes_on_while_the_writer_writes(tmp_path, monkeypatch):
    """A writer held back: training steps on, the checkpoint appears (marker, hook) only
    once written, and the run's end waits for it."""
    release = threading.Event()
    real = torch.save
    in_writer: list[bool] = []

    def slow_save(obj, f, *a, **k):  # noqa: ANN001
        if threading.current_thread().name.startswith("phmscale-ckpt-writer"):
            in_writer.append(True)
            release.wait(timeout=60)
        return real(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", slow_save)
    spec = tiny_spec(tmp_path, **{"checkpoint.every": 3, "train.steps": 8, "train.log_every": 1})
    steps_while_writing: list[int] = []
    rec = Recorder()
    on_metrics = rec.hooks.on_metrics

    def watch(step, metrics):  # noqa: ANN001
        if in_writer and not release.is_set():
            steps_while_writing.append(step)
            assert ckpt.latest_checkpoint(spec.checkpoint_dir) is None  # not complete yet
            if step == 6:
                release.set()
        on_metrics(step, metrics)

    rec.hooks.on_metrics = watch
    result = train_one_rank(spec, global_batches(8, 8), rec.hooks)
    assert in_writer and steps_while_writing[:3] == [4, 5, 6]  # trained on while writing
    assert rec.checkpoints[0] == 3 and result.status == "completed"
    assert ckpt.latest_checkpoint(spec.checkpoint_dir).step == 8


def test_failed_run_keeps_the_last_complete_checkpoint(tmp_path, monkeypatch):
    """An error while a save is being written: the run waits for the writer (its files are
    whole), leaves that save aside, unmarked, and the previous one is what a resume loads."""
    release = threading.Event()
    real = torch.save

    def slow_save(obj, f, *a, **k):  # noqa: ANN001
        if "step_00000004" in str(f):
            release.wait(timeout=60)
        return real(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", slow_save)
    spec = tiny_spec(tmp_path, **{"checkpoint.every": 2, "train.steps": 8, "train.log_every": 1})
    rec = Recorder()
    on_metrics = rec.hooks.on_metrics

    def fail(step, metrics):  # noqa: ANN001
        on_metrics(step, metrics)
        if step == 5:  # the save of step 4 is still being written
            release.set()
            raise RuntimeError("boom")

    rec.hooks.on_metrics = fail
    with pytest.raises(RuntimeError, match="boom"):
        train_one_rank(spec, global_batches(8, 8), rec.hooks)
    assert rec.checkpoints == [2]
    assert ckpt.latest_checkpoint(spec.checkpoint_dir).step == 2
    aside = tmp_path / "ckpt" / "step_00000004.partial"
    assert not (aside / ckpt.MARKER).exists()
    for path in aside.rglob("*.pt"):
        torch.load(path, weights_only=False)  # written whole before the run gave up


def test_stop_waits_for_its_save(tmp_path):
    """A stop between saves: the run checkpoints the step it stopped at, complete (marker,
    hook) before it returns."""
    stop = threading.Event()
    spec = tiny_spec(tmp_path, **{"checkpoint.every": 3, "train.steps": 20, "train.log_every": 1})
    rec = Recorder()
    on_metrics = rec.hooks.on_metrics

    def stop_at_4(step, metrics):  # noqa: ANN001
        on_metrics(step, metrics)
        if step == 4:
            stop.set()

    rec.hooks.on_metrics = stop_at_4
    result = train_one_rank(spec, global_batches(20, 8), rec.hooks, stop=stop)
    assert result.status == "interrupted" and result.step == 4
    assert rec.checkpoints == [3, 4]
    assert ckpt.latest_checkpoint(spec.checkpoint_dir).step == 4
