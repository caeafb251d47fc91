"""init_ray's runtime env inside a submitted Ray job (no Ray started)."""

from __future__ import annotations

import json

from rllib_diffusion.utils.runtime import _without_job_fields


def test_job_runtime_env_wins_over_init_ray_defaults(monkeypatch):
    ours = {"env_vars": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}, "pip": ["x"]}
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert _without_job_fields(ours) == ours  # not in a job: unchanged
    job = {"runtime_env": {"working_dir": "gcs://pkg.zip", "env_vars": {"OMP_NUM_THREADS": "2"}}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(job))
    # Ray refuses to merge fields/env vars set by both; the job's stay, ours fill the rest.
    assert _without_job_fields(ours) == {"env_vars": {"MKL_NUM_THREADS": "1"}, "pip": ["x"]}
    job["runtime_env"]["pip"] = ["y"]
    job["runtime_env"]["env_vars"]["MKL_NUM_THREADS"] = "4"
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(job))
    assert _without_job_fields(ours) == {}


def test_merge_with_the_job_env_is_accepted_by_ray(monkeypatch):
    from ray.runtime_env.runtime_env import _merge_runtime_env

    job = {"working_dir": "gcs://pkg.zip", "env_vars": {"OMP_NUM_THREADS": "1"}}
    ours = {"env_vars": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}}
    assert _merge_runtime_env(job, ours) is None  # what broke `--runtime-env-json` jobs
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"runtime_env": job}))
    merged = _merge_runtime_env(job, _without_job_fields(ours))
    assert merged["working_dir"] == "gcs://pkg.zip"
    assert merged["env_vars"] == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
