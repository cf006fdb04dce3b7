"""The worker under torchrun for the TorchX launcher: one rank of `run_job`.

`python -m torch.distributed.run … -m phmscale.launch.torchx_entry --spec B64`

The job arrives resolved in the command (`torchx.encode_spec`), its secrets as `${VAR}`
references read here from the role's environment. torchrun exports RANK/WORLD_SIZE/
LOCAL_RANK/MASTER_ADDR/MASTER_PORT; TorchX exports TORCHX_JOB_ID (the app handle), which tags
the MLflow run. Exit codes: 0 done, 2 invalid input (the job, its data, a checkpoint folder of
another run), 3 tracking server unreachable, 130 stopped (SIGTERM from `phmscale stop`,
torchrun or Kubernetes: the ranks checkpointed at their current step first). torchrun restarts
failed ranks up to resources.max_failures times; each restart resumes from the newest
checkpoint, into the same MLflow run (kept in the run folder's run.json before the first
checkpoint exists).
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
    parser.add_argument("--spec", required=True, help="the resolved job, base64 JSON")
    return parser


def run(encoded: str) -> int:
    from phmscale.data import check_data
    from phmscale.launch.torchx import decode_spec
    from phmscale.spec import load_job_dict
    from phmscale.train.job import Launch, run_job

    spec = load_job_dict(decode_spec(encoded), source="<job shipped by phmscale submit>")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    problems = check_data(spec, world_size=world)
    if problems:
        from phmscale.errors import InvalidInputError

        raise InvalidInputError(spec.mask("\n".join(problems)))
    handle = os.environ.get("TORCHX_JOB_ID", "")
    tags = {HANDLE_TAG: handle} if handle and "${" not in handle else {}
    result = run_job(spec, Launch("torchx", tags=tags))
    if int(os.environ.get("RANK", "0")) == 0:
        quality = {k: round(v, 4) for k, v in result.eval.items()}
        print(f"phmscale: {spec.name} {result.status} at step {result.step}/{spec.train.steps} "
              f"in {result.wall_s:.1f} s; eval {quality}; checkpoint "
              f"{spec.mask(result.checkpoint or 'none')}; MLflow run {result.run_id}", flush=True)
    return 130 if result.status == "interrupted" else 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return run(args.spec)
    except PhmscaleError as error:
        from phmscale.spec.secrets import mask_values

        rank = os.environ.get("RANK", "0")
        print(f"error (rank {rank}): {mask_values(str(error))}", file=sys.stderr, flush=True)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
