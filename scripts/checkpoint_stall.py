"""Checkpoint stall per save (the time the training loop is blocked by a save, its hooks
included), this tree against an earlier revision's loop, side by side:

    python scripts/checkpoint_stall.py [--before REV] [--rounds 2] [--job J] [--set k=v ...]

Each round runs the job through `run_job` (MLflow on a fresh sqlite store, as `phmscale run`
logs) once in this tree and once in `git archive REV` (default 1daa223^, the loop before
saves were written in a thread), in an order alternated from round to round, 300 steps with a
save every 50. This tree reports each save's stall itself (`TrainResult.checkpoint_stalls`);
the earlier loop is timed around `_Run.save`, which there held the save and its hooks. The
save at the last step is left out of the medians (the run ends by waiting for it), and a ratio
is the median over rounds of that round's after ÷ before median stall. `--set
checkpoint.async_save=false` gives this tree's stall with the files written in the loop.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Run in a child process whose PYTHONPATH is the tree to measure; prints one JSON line.
CHILD = """
import json, statistics, sys, tempfile, time
from phmscale.spec import load_job
from phmscale.train import loop
from phmscale.train.job import Launch, run_job
timed = []
if not hasattr(loop.TrainResult, "__dataclass_fields__") or \
        "checkpoint_stalls" not in loop.TrainResult.__dataclass_fields__:
    real = loop._Run.save
    def save(self, at):
        t0 = time.perf_counter(); real(self, at); timed.append(time.perf_counter() - t0)
    loop._Run.save = save
job, sets = sys.argv[1], json.loads(sys.argv[2])
with tempfile.TemporaryDirectory() as tmp:
    spec = load_job(job, [f"checkpoint.dir={tmp}/ck", f"tracking.uri=sqlite:///{tmp}/m.db",
                          *sets])
    r = run_job(spec, Launch("local"))
stalls = getattr(r, "checkpoint_stalls", None) or timed
print(json.dumps({"stalls": stalls, "step_s": statistics.median(r.step_times)}))
"""


def measure(tree: Path, job: str, sets: list[str]) -> dict[str, float | list[float]]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(ROOT / job), json.dumps(sets)],
                          cwd=tree, env=env, capture_output=True, text=True, timeout=900,
                          check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", default="1daa223^")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--job", default="jobs/quickstart.yaml")
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()
    sets = ["train.steps=300", "checkpoint.every=50", *args.set]
    with tempfile.TemporaryDirectory() as tmp:
        before = Path(tmp)
        archive = subprocess.run(["git", "archive", args.before], cwd=ROOT, check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
        rows, ratios = [], []
        for r in range(args.rounds):
            trees = {"before": before, "after": ROOT}
            order = ("before", "after") if r % 2 == 0 else ("after", "before")
            got = {name: measure(trees[name], args.job, sets) for name in order}
            med = {name: statistics.median(got[name]["stalls"][:-1]) for name in got}
            ratios.append(med["after"] / med["before"])
            rows.append((r, med["before"], med["after"], got["before"]["step_s"],
                         got["after"]["step_s"]))
    print(f"before = {args.before}, {args.job}, {' '.join(sets)}")
    print("round  before stall ms  after stall ms  before step ms  after step ms")
    for r, b, a, b_step, a_step in rows:
        print(f"{r:5d}  {b * 1e3:15.1f}  {a * 1e3:14.1f}  {b_step * 1e3:14.1f}  "
              f"{a_step * 1e3:13.1f}")
    print(f"after / before stall (median over rounds): {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
