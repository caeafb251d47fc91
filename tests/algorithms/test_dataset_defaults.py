"""Per-(task, data kind) paper defaults of the offline Q-learners (issue 12)."""

from __future__ import annotations

import pytest

from rllib_diffusion.algorithms.diffusion_ql.diffusion_ql import DiffusionQLConfig
from rllib_diffusion.algorithms.offline_q.offline_q import dataset_kind


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        ("mujoco/hopper/medium-v0", "medium"),
        ("mujoco/hopper/expert-v0", "expert"),
        ("hopper-medium-replay-v2", "medium-replay"),
        ("/data/walker2d_medium_expert.npz", "medium-expert"),
        ("data/hopper-medium-v5-small.npz", "medium"),
        ("my/own/dataset-v0", None),
        (None, None),
    ],
)
def test_dataset_kind_from_ids_and_file_names(source, kind):
    assert dataset_kind(source) == kind


@pytest.mark.parametrize(
    ("env_id", "source", "grad_clip"),
    [
        ("Hopper-v5", "hopper-medium-v2", 9.0),
        ("Hopper-v5", "mujoco/hopper/medium-replay-v0", 4.0),
        ("Hopper-v5", "hopper-medium-expert-v2", 5.0),
        ("Walker2d-v5", "walker2d-medium-replay-v2", 4.0),
        ("HalfCheetah-v5", "halfcheetah-medium-replay-v2", 2.0),
        ("HalfCheetah-v5", "halfcheetah-medium-expert-v2", 7.0),
        ("Walker2d-v5", "some/unknown-v0", 1.0),  # unknown kind: the task's (medium) values
    ],
)
def test_diffusion_ql_takes_the_official_values_for_task_and_kind(env_id, source, grad_clip):
    assert DiffusionQLConfig.dataset_defaults(env_id, source) == {
        "eta": 1.0,
        "grad_clip": grad_clip,
    }


def test_a_built_config_gets_them_unless_the_user_sets_the_knob():
    from rllib_diffusion.algorithms.offline_q.train import OfflineSettings, build_offline_config

    s = OfflineSettings(dataset="hopper-medium-replay-v2", algo="diffusion_ql")
    config, _ = build_offline_config(s, "/nonexistent", "Hopper-v5", 3, 2)
    assert config.grad_clip == 4.0
    s = OfflineSettings(dataset="hopper-medium-replay-v2", algo="diffusion_ql", grad_clip=2.5)
    assert build_offline_config(s, "/nonexistent", "Hopper-v5", 3, 2)[0].grad_clip == 2.5
