#!/usr/bin/env bash
# Train a phmscale job on a Slurm cluster through TorchX (the torchrun path, no Ray): TorchX
# writes an sbatch script with one heterogeneous-job component per node, each node runs
# torchrun, and every rank runs the engine's loop (DeepSpeed, nccl on GPUs).
#
# Use it on a Slurm login node, in a checkout of this repository on a filesystem the compute
# nodes share (TorchX's slurm scheduler runs the job in the submit directory; the virtualenv,
# the job file, checkpoints and the default sqlite MLflow store must all be visible there):
#   python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[torchx]"
#   bash clusters/slurm-torchx.sh                                  # 2 nodes × 1 GPU
#   NODES=4 PROCS_PER_NODE=8 PARTITION=a100 bash clusters/slurm-torchx.sh jobs/phm-vit-digits-n4.yaml
#   DRYRUN=1 bash clusters/slurm-torchx.sh                         # print the sbatch script only
# It prints a handle slurm://torchx/<slurm job id>; then:
#   phmscale status slurm://torchx/<slurm job id>
#   phmscale logs slurm://torchx/<slurm job id> --follow
#   phmscale stop slurm://torchx/<slurm job id>
#
# The same AppDef with TorchX's own CLI (the component in phmscale/launch/torchx.py):
#   torchx run -s slurm -cfg partition=gpu,time=02:00:00 phmscale/launch/torchx.py:train \
#       --job jobs/lm-pystdlib-phm-n4.yaml --nnodes 2 --nproc_per_node 1 \
#       --sets resources.gpus_per_worker=1,checkpoint.dir=$PWD/checkpoints/lm-pystdlib-phm-n4
#
# Environment knobs: PARTITION (gpu), TIME (02:00:00), NODES (2), PROCS_PER_NODE (1),
# GPUS_PER_PROC (1), MLFLOW_TRACKING_URI (default: sqlite in this directory; only rank 0
# writes to it), DRYRUN (1: print what would be submitted).
set -euo pipefail

JOB=${1:-jobs/lm-pystdlib-phm-n4.yaml}
PARTITION=${PARTITION:-gpu}
TIME=${TIME:-02:00:00}
NODES=${NODES:-2}
PROCS_PER_NODE=${PROCS_PER_NODE:-1}
GPUS_PER_PROC=${GPUS_PER_PROC:-1}
NAME=$(basename "$JOB" .yaml)

args=(
  submit "$JOB"
  --scheduler torchx:slurm
  --scheduler-arg "partition=$PARTITION"
  --scheduler-arg "time=$TIME"
  --scheduler-arg "nproc_per_node=$PROCS_PER_NODE"
  --set "resources.workers=$((NODES * PROCS_PER_NODE))"
  --set "resources.gpus_per_worker=$GPUS_PER_PROC"
  --set "checkpoint.dir=$PWD/checkpoints/$NAME"
  --set "tracking.uri=${MLFLOW_TRACKING_URI:-sqlite:///$PWD/mlflow.db}"
)
if [[ -n "${DRYRUN:-}" ]]; then
  args+=(--dryrun)
fi
exec phmscale "${args[@]}"
