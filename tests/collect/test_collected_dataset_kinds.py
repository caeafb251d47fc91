"""The ids of the datasets this project collects (docs/datasets.md) name their kind, and
the offline algorithms' per-dataset defaults pick it up."""

from __future__ import annotations

import pytest

from rllib_diffusion.algorithms.diffusion_ql.diffusion_ql import DiffusionQLConfig
from rllib_diffusion.algorithms.offline_q.offline_q import dataset_kind


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        ("rllib-diffusion/walker2d/medium-replay-v0", "medium-replay"),
        ("rllib-diffusion/hopper/medium-replay-v0", "medium-replay"),
        ("rllib-diffusion/hopper/expert-v0", "expert"),
        ("rllib-diffusion/hopper/medium-expert-v0", "medium-expert"),
        ("rllib-diffusion/walker2d/medium-1m-v0", "medium"),
        ("rllib-diffusion/halfcheetah/medium-v0", "medium"),
        ("/root/.minari/datasets/rllib-diffusion/walker2d/medium-expert-v0", "medium-expert"),
    ],
)
def test_collected_ids_name_their_kind(source, kind):
    assert dataset_kind(source) == kind


@pytest.mark.parametrize(
    ("env_id", "source", "grad_clip"),
    [
        ("Walker2d-v5", "rllib-diffusion/walker2d/medium-replay-v0", 4.0),
        ("Walker2d-v5", "rllib-diffusion/walker2d/medium-expert-v0", 5.0),
        ("Walker2d-v5", "rllib-diffusion/walker2d/medium-1m-v0", 1.0),
        ("Hopper-v5", "rllib-diffusion/hopper/medium-replay-v0", 4.0),
        ("Hopper-v5", "rllib-diffusion/hopper/medium-expert-v0", 5.0),
        ("HalfCheetah-v5", "rllib-diffusion/halfcheetah/medium-v0", 9.0),
        # No published Diffusion-QL setting for expert data: the task's (medium) values.
        ("Hopper-v5", "rllib-diffusion/hopper/expert-v0", 9.0),
    ],
)
def test_diffusion_ql_defaults_follow_the_collected_kind(env_id, source, grad_clip):
    assert DiffusionQLConfig.dataset_defaults(env_id, source)["grad_clip"] == grad_clip
