"""Launchers: where a job's processes run and how they learn their rank, never how to train.

Ray is implemented here; TorchX will add `torchx.py` next to it. Modules, read in this order:
- `errors`      — what a user can get wrong about a cluster (address, token, job id)
- `auth`        — Ray token authentication: where the token is found, how it is sent
- `backend`     — the job-handle dispatch `status/logs/stop/list` go through (Ray ids now,
                  TorchX `scheduler://session/app_id` handles later)
- `package`     — a validated spec → the submission (resolved YAML, runtime_env, metadata)
- `local`       — `--address local`: a Ray cluster in this process, dashboard on 127.0.0.1
- `ray_jobs`    — the Ray Jobs API client behind `phmscale submit/status/logs/stop/list`
- `ray_entry`   — the job's driver on the cluster: a Ray Train `TorchTrainer`
- `ray_worker`  — what every Ray Train worker runs: checkpoint restore, the engine's loop,
                  `ray.train.report` hooks and dashboard gauges
- `mlflow_link` — which MLflow run belongs to which cluster job

Nothing here imports Ray at module level except `ray_entry`/`ray_worker`, which only run on a
cluster, so the CLI answers `--help` and rejects an invalid job without touching Ray.
"""
