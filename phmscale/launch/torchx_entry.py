"""The worker under torchrun for the TorchX launcher: one rank of the engine's loop.

`python -m torch.distributed.run … -m phmscale.launch.torchx_entry --job JOB [--set k=v]…`

torchrun exports RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT, which the loop reads;
TorchX exports TORCHX_JOB_ID (the app handle), which tags the MLflow run. Exit codes: 0 done,
2 invalid input (the job, its data), 3 tracking server unreachable, 130 interrupted (the loop
checkpointed first). torchrun restarts failed ranks up to resources.max_failures times, and
each restart resumes from the newest checkpoint into the same MLflow run.
"""

from __future__ import annotations

import argparse
import os
import sys

from phmscale.errors import PhmscaleError

HANDLE_TAG = "phmscale.torchx.handle"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m phmscale.launch.torchx_entry",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--job", required=True, help="job spec YAML file")
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        metavar="KEY.PATH=VALUE", help="override a job field (repeatable)")
    return parser


def run(job: str, sets: list[str]) -> int:
    from phmscale.data import check_data
    from phmscale.spec import load_job
    from phmscale.tracking import tracking_hooks
    from phmscale.train.hooks import HookList
    from phmscale.train.loop import train

    spec = load_job(job, sets)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    problems = check_data(spec, world_size=world)
    if problems:
        from phmscale.errors import InvalidInputError

        raise InvalidInputError("\n".join(problems))
    handle = os.environ.get("TORCHX_JOB_ID", "")
    tags = {HANDLE_TAG: handle} if handle and "${" not in handle else {}
    hooks = HookList(tracking_hooks(spec, launcher="torchx", extra_tags=tags))
    result = train(spec, hooks=hooks)  # use_gpu=None: the spec and the node decide
    if int(os.environ.get("RANK", "0")) == 0:
        quality = {k: round(v, 4) for k, v in result.eval.items()}
        print(f"phmscale: {spec.name} {result.status} at step {result.step}/{spec.train.steps} "
              f"in {result.wall_s:.1f} s; eval {quality}; checkpoint {result.checkpoint}; "
              f"MLflow run {result.run_id}", flush=True)
    return 130 if result.status == "interrupted" else 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return run(args.job, args.sets)
    except PhmscaleError as error:
        rank = os.environ.get("RANK", "0")
        print(f"error (rank {rank}): {error}", file=sys.stderr, flush=True)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
