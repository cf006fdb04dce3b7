"""A checkpoint's flush (tracking/mlflow_hook.py): only the steps the checkpoint holds, sent
from a thread the end of the run waits for."""

from __future__ import annotations

from tests.tracking.test_flush import KEYS, _hook


def test_checkpoint_flushes_only_its_steps_in_the_background(tmp_path):
    hook, client = _hook(tmp_path)  # steps 1-300 buffered
    hook.on_checkpoint(150, str(tmp_path / "step_00000150"))  # completed at step 300
    hook._join_flush()
    assert {m[3] for m in hook.buffer} == set(range(151, 301))  # a resume logs them again
    steps = sorted(p.step for p in client.get_metric_history(hook.run_id, KEYS[0]))
    assert steps == list(range(1, 151))
    assert client.get_run(hook.run_id).data.tags["phmscale.last_checkpoint"].endswith(
        "step_00000150")
