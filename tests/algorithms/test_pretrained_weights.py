"""The one loader of pretrained denoisers: field checks name every mismatch."""

from __future__ import annotations

import pytest
import torch

from rllib_diffusion.algorithms.denoiser_finetune import check_network_match
from rllib_diffusion.algorithms.pretrained_weights import check_fields, checksum
from rllib_diffusion.checkpoints import CheckpointError
from rllib_diffusion.modules.model_config import DiffusionPolicyConfig


def test_check_fields_names_every_mismatch_and_treats_tuples_as_lists():
    a = {"obs_dim": 11, "hidden_dims": (256, 256), "horizon": 4, "time_dim": 16}
    b = {"obs_dim": 17, "hidden_dims": [256, 256], "horizon": 8, "time_dim": 16}
    with pytest.raises(CheckpointError) as err:
        check_fields(a, b, "ckpt", fields=tuple(a), owner="X", fix="Do Y.")
    message = str(err.value)
    assert "obs_dim: checkpoint 11 vs X 17" in message
    assert "horizon: checkpoint 4 vs X 8" in message
    assert "hidden_dims" not in message and "time_dim" not in message
    assert message.startswith("Pretrained checkpoint 'ckpt'") and message.endswith("Do Y.")
    check_fields(a, dict(a), "ckpt", fields=tuple(a), owner="X", fix="")  # equal: no error


def test_network_match_ignores_sampling_fields_but_not_network_shape():
    base = DiffusionPolicyConfig(obs_dim=11, action_dim=3, horizon=4).to_dict()
    check_network_match(base, {**base, "sampler": "ddim", "act_steps": 2}, "ckpt")
    with pytest.raises(CheckpointError, match="hidden_dims"):
        check_network_match(base, {**base, "hidden_dims": [64]}, "ckpt")


def test_checksum_is_the_float64_sum_of_all_elements():
    tensors = [torch.ones(3, dtype=torch.float32), torch.full((2,), 0.5)]
    assert checksum(tensors) == 4.0


@pytest.mark.parametrize("algo", ["drwr", "dawr", "dipo", "qsm", "dql", "idql"])
def test_a_checkpoint_naming_another_env_is_refused_before_ray(algo, pretrained, tmp_path):
    """Every family fine-tuning a pretrained denoiser checks the checkpoint's env takes
    its policy (Hopper dims, Walker2d named) in one line, before building anything."""
    import json
    import shutil

    from rllib_diffusion.algorithms import registry
    from rllib_diffusion.algorithms.finetune_run import FinetuneSettings

    ckpt = tmp_path / "checkpoint"
    ckpt.mkdir()
    meta = json.loads((pretrained[0] / "checkpoint" / "rllib_diffusion.json").read_text())
    meta["env_id"] = meta["policy_config"]["env_id"] = "Walker2d-v5"
    (ckpt / "rllib_diffusion.json").write_text(json.dumps(meta))
    shutil.copy(pretrained[0] / "checkpoint" / "rllib_checkpoint.json", ckpt)
    family = registry.get(algo, registry.FINETUNE).family_class
    with pytest.raises(CheckpointError, match="its env 'Walker2d-v5' has 17 and 6"):
        family(FinetuneSettings.of(algo=algo, checkpoint=str(ckpt), out_dir=str(tmp_path)))
