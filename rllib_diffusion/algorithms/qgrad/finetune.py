"""DIPO / QSM fine-tuning run: DiffusionBC checkpoint → action-gradient fine-tuning from
a replay of EnvRunner rollouts → checkpoints + curve.

``rllib-diffusion finetune --algo dipo|qsm --checkpoint <BC checkpoint>``: the shared
:class:`~rllib_diffusion.algorithms.denoiser_finetune.DenoiserFinetuneFamily` (run
control, resume with networks, targets, optimisers, counters and the replay,
evaluation, the last iteration sized to the budget); here: what a progress line carries
and the network DIPO acts with.
"""

from __future__ import annotations

from rllib_diffusion import metrics as M
from rllib_diffusion.algorithms.denoiser_finetune import OWN_KEYS, DenoiserFinetuneFamily


class QGradFamily(DenoiserFinetuneFamily):
    """DIPO or QSM (``s.algo``) fine-tuning on the run loop (see the module doc)."""

    namespace = M.REPLAY_FINETUNE_NAMESPACE
    own_keys = (*OWN_KEYS, M.ACTION_SHIFT)
    learner_keys = {
        "actor_loss": M.ACTOR_LOSS,
        "critic_loss": M.CRITIC_LOSS,
        "q_mean": M.Q_MEAN,
        "q_grad_norm": M.Q_GRAD_NORM,
    }
    shown = (
        ("actor loss", "actor_loss", ".3g"),
        ("critic loss", "critic_loss", ".3g"),
        ("Q", "q_mean", ".3g"),
        ("action shift", M.ACTION_SHIFT, ".3g"),
        ("buffer", M.BUFFER_DECISIONS, ".0f"),
    )

    def acting(self) -> str:
        """DIPO acts with its Polyak target copy of the denoiser (``act_with_target``)."""
        return "actor_target" if self.config.model_config.get("act_with_target") else "actor"
