"""Checkpoint stall per save (the time the training loop is blocked by a save, its hooks
included), saved in the loop against written in a thread, side by side:

    python scripts/checkpoint_stall.py [JOB.yaml] [--rounds 2] [--set k=v ...]

Each round runs the job once per mode through `run_job` (MLflow on a fresh sqlite store, as
`phmscale run` logs), in an order alternated from round to round, with a save every 50 steps;
a ratio is the median over rounds of that round's async ÷ sync median stall. The save at the
last step is left out of the medians: the run ends by waiting for it, whatever the mode.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

from phmscale.spec import load_job
from phmscale.train.job import Launch, run_job


def stalls(job: str, sets: list[str], async_save: bool) -> tuple[list[float], float]:
    """(stall of each save but the last, median step seconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        spec = load_job(job, [f"checkpoint.dir={tmp}/ck", f"tracking.uri=sqlite:///{tmp}/m.db",
                              f"checkpoint.async_save={str(async_save).lower()}", *sets])
        result = run_job(spec, Launch("local"))
    return result.checkpoint_stalls[:-1], statistics.median(result.step_times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("job", nargs="?", default="jobs/quickstart.yaml")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()
    sets = ["train.steps=300", "checkpoint.every=50", *args.set]
    ratios, rows = [], []
    for r in range(args.rounds):
        got = {}
        for mode in ((False, True) if r % 2 == 0 else (True, False)):
            got[mode] = stalls(args.job, sets, mode)
        sync, asyn = (statistics.median(got[m][0]) for m in (False, True))
        ratios.append(asyn / sync)
        rows.append((r, sync, asyn, got[False][1], got[True][1]))
    print("round  sync stall ms  async stall ms  sync step ms  async step ms")
    for r, sync, asyn, s_step, a_step in rows:
        print(f"{r:5d}  {sync * 1e3:13.1f}  {asyn * 1e3:14.1f}  {s_step * 1e3:12.1f}  "
              f"{a_step * 1e3:13.1f}")
    print(f"async / sync stall (median over rounds): {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
