"""Deployment files in docker/: schema and key fields (nothing is built or launched).

`cluster.yaml` is checked against the cluster-launcher schema shipped with the installed
Ray; `rayjob.yaml` is only parsed (no KubeRay CRD schema is installed here), so its
checks are about the fields this project depends on: placement resources, token auth,
the entrypoint's flags.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
RAY_MINOR = "2.60"


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load((DOCKER / "cluster.yaml").read_text())


@pytest.fixture(scope="module")
def manifests() -> list[dict]:
    return [d for d in yaml.safe_load_all((DOCKER / "rayjob.yaml").read_text()) if d]


@pytest.fixture(scope="module")
def rayjob(manifests) -> dict:
    (job,) = [d for d in manifests if d.get("kind") == "RayJob"]
    return job


def _project_images(text: str) -> list[str]:
    return re.findall(r"image: *(\S*rllib-diffusion:\S+)", text)


# ----------------------------------------------------------------------- cluster launcher
def test_cluster_yaml_matches_ray_schema(cluster):
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import fillout_defaults, validate_config

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(cluster, schema)
    # What `ray up` does before launching: merge the provider defaults, validate again
    # (plus head type / min_workers checks).
    validate_config(fillout_defaults(copy.deepcopy(cluster)))


def test_cluster_places_runners_on_cpu_nodes_and_learners_on_gpu_nodes(cluster):
    types = cluster["available_node_types"]
    head = types[cluster["head_node_type"]]
    assert "rollout" not in head["resources"] and "learner" not in head["resources"]
    workers = [t for name, t in types.items() if name != cluster["head_node_type"]]
    rollout = [t for t in workers if "rollout" in t["resources"]]
    learner = [t for t in workers if "learner" in t["resources"]]
    assert rollout and learner
    for t in rollout:
        # One rollout slot per CPU; no GPUs on rollout nodes.
        assert t["resources"]["rollout"] == t["resources"]["CPU"]
        assert t["resources"].get("GPU", 0) == 0
        assert "docker" not in t or t["docker"]["worker_image"].endswith("-cpu")
    for t in learner:
        assert t["resources"]["learner"] == 1 and t["resources"]["GPU"] >= 1
        assert t["docker"]["worker_image"].endswith("-gpu")
    assert cluster["docker"]["image"].endswith("-cpu")


def test_cluster_keeps_token_auth_and_a_local_dashboard(cluster):
    text = (DOCKER / "cluster.yaml").read_text()
    assert not re.search(r"RAY_AUTH_MODE *= *disabled", text)
    run_options = " ".join(cluster["docker"]["run_options"])
    assert "RAY_AUTH_MODE=token" in run_options
    token_path = re.search(r"RAY_AUTH_TOKEN_PATH=(\S+)", run_options).group(1)
    # The token's folder is what file_mounts copies to every node.
    assert str(Path(token_path).parent) in cluster["file_mounts"]
    head_start = " ".join(cluster["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "0.0.0.0" not in text


# ------------------------------------------------------------------------------- KubeRay
def test_rayjob_cluster_layout_and_token_auth(rayjob, manifests):
    assert rayjob["apiVersion"] == "ray.io/v1"
    spec = rayjob["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"].startswith(RAY_MINOR + ".")
    assert cluster["authOptions"]["mode"] == "token" and cluster["authOptions"]["secretName"]
    assert "disabled" not in (DOCKER / "rayjob.yaml").read_text()

    head = cluster["headGroupSpec"]
    assert "rollout" not in head.get("resources", {})
    assert "dashboard-host" not in head["rayStartParams"]  # KubeRay's default, behind ClusterIP
    assert "serviceType" not in head and not head.get("enableIngress")
    head_pod = head["template"]["spec"]
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in head_pod.get("volumes", [])
        if "persistentVolumeClaim" in v
    }
    defined = {d["metadata"]["name"] for d in manifests if d["kind"] == "PersistentVolumeClaim"}
    assert claims and claims <= defined

    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    rollout = [g for g in groups.values() if "rollout" in g.get("resources", {})]
    learner = [g for g in groups.values() if "learner" in g.get("resources", {})]
    assert len(rollout) == 1 and len(learner) == 1
    (cpu_container,) = rollout[0]["template"]["spec"]["containers"]
    assert rollout[0]["resources"]["rollout"] == cpu_container["resources"]["limits"]["cpu"]
    assert "nvidia.com/gpu" not in cpu_container["resources"]["limits"]
    assert cpu_container["image"].endswith("-cpu")
    (gpu_container,) = learner[0]["template"]["spec"]["containers"]
    assert learner[0]["resources"]["learner"] == "1"
    assert gpu_container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert gpu_container["image"].endswith("-gpu")


def test_rayjob_runs_finetune_single_threaded(rayjob):
    spec = rayjob["spec"]
    argv = shlex.split(spec["entrypoint"])
    assert argv[:2] == ["python", "experiments/finetune.py"]
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert runtime_env["env_vars"]["OMP_NUM_THREADS"] == "1"
    # KubeRay pastes the entrypoint into the submitter's shell command line: keep it one
    # command.
    assert not re.search(r"&&|;|\|", spec["entrypoint"])


def test_rayjob_entrypoint_flags_parse_with_the_finetune_cli(rayjob):
    from rllib_diffusion.cli import build_parser

    parser = build_parser()
    argv = shlex.split(rayjob["spec"]["entrypoint"])[2:]
    args = parser.parse_args(["finetune", *argv])
    assert args.env_runner_resources == {"rollout": 1.0}
    assert args.learner_resources == {"learner": 1.0}
    assert args.num_learners >= 1 and args.num_gpus_per_learner >= 1


# --------------------------------------------------------------------------------- image
def test_dockerfile_pins_the_ray_and_torch_versions():
    dockerfile = (DOCKER / "Dockerfile").read_text()
    base = re.search(r"^ARG BASE=(\S+)$", dockerfile, re.M).group(1)
    assert base == f"rayproject/ray:{RAY_MINOR}.0-py311-cpu"
    assert f"rayproject/ray:{RAY_MINOR}.0-py311-gpu" in dockerfile  # the documented GPU build
    pin = re.search(r"^torch==(\S+)$", (ROOT / "constraints-cpu.txt").read_text(), re.M)
    assert f"torch=={pin.group(1)}" in dockerfile
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'"ray[rllib,tune,default]>={RAY_MINOR}.0,<' in pyproject
    # Every deployment file runs the images built from this Dockerfile.
    for name in ("cluster.yaml", "rayjob.yaml"):
        images = _project_images((DOCKER / name).read_text())
        assert images and all(re.search(r"-(cpu|gpu)$", i) for i in images), (name, images)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "runs"} <= set(ignored)
