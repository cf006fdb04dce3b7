"""Launchers: where a job's processes run and how they learn their rank, never how to train.

Every launcher ends in `phmscale.train.job.run_job`. Modules, read in this order:
- `errors`      — what a user can get wrong about a cluster (address, token, job id)
- `auth`        — Ray token authentication: where the token is found, how it is sent
- `record`      — `JobRecord`, one cluster job as every backend describes it
- `backend`     — which backend owns a job handle (`status/logs/stop/list` go through it)
- `package`     — a validated spec (or sweep) → the submission (resolved YAML, runtime_env,
                  metadata)
- `local`       — `--address local`: a Ray cluster in this process, dashboard on 127.0.0.1
- `ray_jobs`    — the Ray Jobs API client behind `phmscale submit/status/logs/stop/list`
- `ray_entry`   — a job's driver on the cluster: a Ray Train `TorchTrainer`
- `ray_worker`  — what every Ray Train worker runs: checkpoint restore, `run_job`,
                  `ray.train.report` hooks and dashboard gauges
- `storage`     — a run's folder in checkpoint storage (markers, a sweep cell's state)
- `sweep_entry` — a sweep's driver: Ray Tune, one trial per cell around the job's trainer
- `mlflow_link` — which MLflow run belongs to which cluster job
- `torchx`, `torchx_jobs`, `torchx_entry` — TorchX: the component and AppDef, the client
                  (submit, handles, `TorchXJobs`), what each rank runs under torchrun

Nothing here imports Ray at module level except `ray_entry`/`ray_worker`/`sweep_entry`, which
run on a cluster, so the CLI answers `--help` and rejects an invalid job without touching Ray.
"""
