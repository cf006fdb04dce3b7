"""One rank of a multi-process engine test: `python -m tests.train._worker OUT ZERO BATCH`.

RANK/WORLD_SIZE/MASTER_* come from the parent, as any launcher would set them.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from phmscale.train.loop import train
from tests.train._tiny import Recorder, global_batches, rank_source, tiny_spec


def main() -> None:
    out, zero, global_batch = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    spec = tiny_spec(out, **{"train.zero_stage": zero, "data.batch_size": global_batch // world,
                             "resources.workers": world, "train.steps": 12,
                             "checkpoint.every": 12})
    batches = global_batches(12, global_batch)
    rec = Recorder()
    train(spec, hooks=rec.hooks, train_source=rank_source(batches, rank, world),
          val_source=rank_source(batches[:2], rank, world), use_gpu=False)
    if rank == 0:
        (out / "losses.json").write_text(json.dumps(rec.losses))
        (out / "evals.json").write_text(json.dumps(rec.evals))


if __name__ == "__main__":
    main()
