"""DRWR / DAWR fine-tuning run: DiffusionBC checkpoint → reward-weighted regression on
EnvRunner rollouts → checkpoints + curve.

``rllib-diffusion finetune --algo drwr|dawr --checkpoint <BC checkpoint>``: the shared
:class:`~rllib_diffusion.algorithms.denoiser_finetune.DenoiserFinetuneFamily` (run
control, resume, evaluation), with the rollout store (DAWR's replay buffer, DRWR's open
episodes) in the checkpoint; this module names what a progress line carries.
"""

from __future__ import annotations

from rllib_diffusion import metrics as M
from rllib_diffusion.algorithms.denoiser_finetune import DenoiserFinetuneFamily


class RewardWeightedFamily(DenoiserFinetuneFamily):
    """DRWR or DAWR (``s.algo``) fine-tuning on the run loop (see the module doc)."""

    namespace = M.AWR_NAMESPACE
    learner_keys = {
        "actor_loss": M.ACTOR_LOSS,
        "critic_loss": M.CRITIC_LOSS,
        "value_mean": M.VALUE_MEAN,
        "weight_mean": M.WEIGHT_MEAN,
        "weight_at_max": M.WEIGHT_AT_MAX,
    }
    shown = (
        ("actor loss", "actor_loss", ".3g"),
        ("critic loss", "critic_loss", ".3g"),
        ("weight mean", "weight_mean", ".3g"),
        ("at max", "weight_at_max", ".2f"),
    )
