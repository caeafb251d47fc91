"""The resource check without Ray: request counting from RLlib configs and the verdict on
a 2-CPU laptop, a 16-CPU box and a CPU+GPU cluster (custom resources, GPUs, evaluation
runners, Tune's driver bundle, autoscaling, busy clusters)."""

from __future__ import annotations

import json

import pytest

from rllib_diffusion.utils import resources as R
from rllib_diffusion.utils.resources import ClusterView, check_fit, request_from_config

LAPTOP = ClusterView(nodes=({"CPU": 2.0},), available={"CPU": 2.0}, driver_node={"CPU": 2.0})
BOX16 = ClusterView(nodes=({"CPU": 16.0},), available={"CPU": 16.0}, driver_node={"CPU": 16.0})
_HEAD = {"CPU": 8.0}
_ROLLOUT = {"CPU": 16.0, "rollout": 16.0}
_GPU = {"CPU": 8.0, "GPU": 1.0, "learner": 1.0}
GPU_CLUSTER = ClusterView(
    nodes=(_HEAD, _ROLLOUT, _ROLLOUT, _GPU, _GPU),
    available={"CPU": 56.0, "GPU": 2.0, "rollout": 32.0, "learner": 2.0},
    driver_node=_HEAD,
)


def ppo(runners: int = 1, learners: int = 0, gpus: float = 0.0, **kw):
    """A PPOConfig with the given layout (``kw``: runner/learner custom resources,
    evaluation runners)."""
    from ray.rllib.algorithms.ppo import PPOConfig

    return (
        PPOConfig()
        .env_runners(
            num_env_runners=runners,
            custom_resources_per_env_runner=kw.get("runner_res", {}),
        )
        .learners(
            num_learners=learners,
            num_gpus_per_learner=gpus,
            custom_resources_per_learner=kw.get("learner_res", {}),
        )
        .evaluation(evaluation_num_env_runners=kw.get("eval_runners", 0))
    )


def verdict(config, cluster, **kw):
    v = check_fit(request_from_config(config, in_tune=kw.pop("in_tune", False)), cluster, **kw)
    assert "\n" not in v.message
    return v


def test_issue_case_laptop_never_fits():
    """1 EnvRunner + 2 learners = 3 CPUs on a 2-CPU node: never, with flags to change."""
    v = verdict(ppo(runners=1, learners=2), LAPTOP, tag="[finetune] ")
    assert v.status == "never"
    msg = v.message
    assert msg.startswith("[finetune] this run can never start")
    assert "3 CPU needed (1 for 1 EnvRunner + 2 for 2 learners), 2 in the cluster" in msg
    assert "Requested 1 EnvRunner (1 CPU), 2 learners (2 CPU)" in msg
    assert "1 node (2 CPU)" in msg and "no autoscaler" in msg
    assert "--num-env-runners" in msg and "--num-learners" in msg


@pytest.mark.parametrize(
    ("runners", "learners", "status"),
    [(0, 2, "ok"), (2, 0, "ok"), (1, 1, "ok"), (3, 0, "never"), (0, 3, "never"), (2, 1, "never")],
)
def test_laptop_driver_holds_no_cpu(runners, learners, status):
    """The driver (and a learner inside it) holds no Ray CPU outside Tune."""
    assert verdict(ppo(runners=runners, learners=learners), LAPTOP).status == status


def test_tune_trial_counts_the_driver_bundle():
    assert verdict(ppo(runners=0, learners=2), LAPTOP, in_tune=True).status == "never"
    assert verdict(ppo(runners=1, learners=0), LAPTOP, in_tune=True).status == "ok"
    req = request_from_config(ppo(runners=1, learners=0), in_tune=True)
    assert req.totals() == {"CPU": 2.0}


def test_sixteen_cpu_box():
    assert verdict(ppo(runners=14, learners=2), BOX16).status == "ok"
    v = verdict(ppo(runners=15, learners=2), BOX16)
    assert v.status == "never" and "17 CPU needed" in v.message


def test_evaluation_runners_are_counted():
    req = request_from_config(ppo(runners=1, eval_runners=2))
    assert [(g.kind, g.count) for g in req.groups if g.count] == [
        ("EnvRunner", 1),
        ("evaluation EnvRunner", 2),
    ]
    v = verdict(ppo(runners=1, eval_runners=2), LAPTOP)
    assert v.status == "never" and "evaluation_num_env_runners" in v.message


def test_custom_resource_no_node_offers():
    v = verdict(ppo(runners=1, runner_res={"rollout": 1}), LAPTOP)
    assert v.status == "never"
    assert "each EnvRunner needs 1 CPU, 1 rollout on one node: no node has that" in v.message
    assert "--env-runner-resources" in v.message
    assert "--num-learners" not in v.message


def test_gpu_learner_on_cpu_only_cluster():
    v = verdict(ppo(runners=0, learners=1, gpus=1), LAPTOP)
    assert v.status == "never"
    assert "1 GPU needed (1 for 1 learner), 0 in the cluster" in v.message
    assert "--num-gpus-per-learner" in v.message


def test_gpu_learner_inside_driver_needs_gpu_on_driver_machine():
    v = verdict(ppo(runners=1, learners=0, gpus=1), LAPTOP)
    assert v.status == "never" and "driver's machine, which has 0" in v.message
    # GPUs elsewhere in the cluster do not help a learner inside the driver ...
    assert verdict(ppo(runners=1, learners=0, gpus=1), GPU_CLUSTER).status == "never"
    # ... nor does an autoscaler; a GPU on the driver's node does.
    gpu_head = ClusterView(nodes=(_GPU,), available=_GPU, driver_node=_GPU)
    assert verdict(ppo(runners=1, learners=0, gpus=1), gpu_head).status == "ok"


def test_cpu_gpu_cluster_layout():
    layout = ppo(
        runners=32, learners=2, gpus=1, runner_res={"rollout": 1}, learner_res={"learner": 1}
    )
    assert verdict(layout, GPU_CLUSTER).status == "ok"
    more = ppo(
        runners=33, learners=2, gpus=1, runner_res={"rollout": 1}, learner_res={"learner": 1}
    )
    v = verdict(more, GPU_CLUSTER)
    assert v.status == "never" and "33 rollout needed" in v.message
    assert "5 nodes (8 CPU; 2× 16 CPU, 16 rollout; 2× 8 CPU, 1 GPU, 1 learner)" in v.message


def test_bundle_must_fit_on_one_node():
    """Two 1-GPU nodes hold 2 GPUs in total, but not one 2-GPU learner."""
    v = verdict(ppo(runners=0, learners=1, gpus=2), GPU_CLUSTER)
    assert v.status == "never"
    assert "each learner needs 0 CPU, 2 GPU on one node" not in v.message  # 0 CPU dropped
    assert "each learner needs 2 GPU on one node: no node has that" in v.message


def test_packing_onto_nodes():
    """Totals fit, each bundle fits a node, but not all of them together."""
    req = R.ResourceRequest(
        (
            R.ActorGroup("learner", 2, {"CPU": 1.5}, ("num_learners", "", "", "")),
            R.ActorGroup("EnvRunner", 1, {"CPU": 1.0}, ("num_env_runners", "", "", "")),
        )
    )
    two = ClusterView(nodes=({"CPU": 2.0}, {"CPU": 2.0}), available={"CPU": 4.0})
    v = check_fit(req, two)
    assert v.status == "never" and "do not fit onto the nodes together" in v.message
    three = ClusterView(nodes=({"CPU": 2.0},) * 3, available={"CPU": 6.0})
    assert check_fit(req, three).status == "ok"


def test_autoscaler_turns_never_into_wait():
    scaling = ClusterView(nodes=LAPTOP.nodes, available=LAPTOP.available, autoscaler=True)
    v = verdict(ppo(runners=1, runner_res={"rollout": 1}), scaling)
    assert v.status == "wait" and "autoscaler" in v.message and "rollout" in v.message


def test_busy_cluster_waits():
    busy = ClusterView(nodes=BOX16.nodes, available={"CPU": 3.0})
    v = verdict(ppo(runners=4, learners=0), busy)
    assert v.status == "wait"
    assert "needs 4 CPU, free now 3 CPU" in v.message


def test_custom_flag_names():
    v = verdict(ppo(runners=3), LAPTOP, flags={"num_env_runners": "num_env_runners="})
    assert v.message.endswith(
        "Change num_env_runners= (see docs/cluster.md, 'How CPUs are spent')."
    )


def _status_kv(monkeypatch, status):
    import ray.autoscaler.v2.utils as v2
    import ray.experimental.internal_kv as kv

    monkeypatch.delenv("RLLIB_DIFFUSION_AUTOSCALER", raising=False)
    monkeypatch.setattr(v2, "is_autoscaler_v2", lambda **_: False)
    monkeypatch.setattr(kv, "_internal_kv_get", lambda key: json.dumps(status).encode())


def test_autoscaler_detection(monkeypatch):
    readonly = {"autoscaler_report": {"node_type_mapping": {"ab12": "node_ab12"}}}
    _status_kv(monkeypatch, readonly)
    assert R.autoscaler_configured() is False
    launcher = {"autoscaler_report": {"node_type_mapping": {"10.0.0.1": "cpu-rollout"}}}
    _status_kv(monkeypatch, launcher)
    assert R.autoscaler_configured() is True
    monkeypatch.setenv("RLLIB_DIFFUSION_AUTOSCALER", "0")
    assert R.autoscaler_configured() is False
    _status_kv(monkeypatch, {})
    assert R.autoscaler_configured() is False
