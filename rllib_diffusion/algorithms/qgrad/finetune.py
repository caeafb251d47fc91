"""DIPO / QSM fine-tuning run: DiffusionBC checkpoint → action-gradient fine-tuning from
a replay of EnvRunner rollouts → checkpoints + curve.

``rllib-diffusion finetune --algo dipo|qsm --checkpoint <BC checkpoint>``: the shared
:class:`~rllib_diffusion.algorithms.denoiser_finetune.DenoiserFinetuneFamily` (run
control, resume with networks, targets, optimisers, counters and the replay,
evaluation); here: what a progress line carries, the network DIPO acts with, and the
last iteration sized to the budget.
"""

from __future__ import annotations

from typing import Any

from rllib_diffusion import metrics as M
from rllib_diffusion.algorithms.denoiser_finetune import OWN_KEYS, DenoiserFinetuneFamily
from rllib_diffusion.algorithms.finetune_run import last_iteration_decisions
from rllib_diffusion.run_loop import RunControl


class QGradFamily(DenoiserFinetuneFamily):
    """DIPO or QSM (``s.algo``) fine-tuning on the run loop (see the module doc)."""

    namespace = M.QGRAD_NAMESPACE
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

    def before_iteration(self, algo: Any, counter: int, control: RunControl) -> None:
        """The iteration that reaches the budget samples only the decisions it needs."""
        algo.limit_next_iteration(
            last_iteration_decisions(
                control.budget - counter, self.policy.act_steps, self.s.decisions_per_iteration
            )
        )
