"""DPOER (seed 001, a TensorFlow re-implementation of DPPO, "Improved Version"): DPPO
with a SAC-style learned temperature.

What the seed's code does (``agent/finetune/train_sac_ppo_diffusion_agent.py`` and
``model/diffusion/diffusion_sac_ppo.py``, configs ``ft_sac_ppo_diffusion_mlp*``): DPPO's
rollouts, GAE, minibatches of (env step, denoising step) pairs and clipped surrogate,
plus (1) a temperature α (initial 0.272, its own Adam at 3e-4, one step per minibatch)
trained on ``−log α · (H_target − Ĥ)`` with ``H_target = −Ta·Da`` and ``Ĥ`` a Gaussian
mixture's entropy fitted to one freshly sampled denoising step (re-estimated every 50
minibatches), and (2) ``α·log π/λ`` added to the unclipped branch of the surrogate
(λ = 10,000; 1,000 in its Square "C1000" variant). There is no replay buffer and no
Q-function in it: despite the name, nothing is learned off-policy. Here it is DPPO's
config, module and learner with that temperature (``DPOERTorchLearner``); the pieces are
in ``dpoer_losses.py``. Start from a DDPM/DDIM DiffusionBC checkpoint with
``rllib-diffusion finetune --algo dpoer``.
"""

from __future__ import annotations

from typing import Any, Literal

from ray.rllib.algorithms.algorithm_config import NotProvided
from ray.rllib.utils.annotations import override

from rllib_diffusion.algorithms.dppo.dppo import DPPO, DPPOConfig
from rllib_diffusion.knobs import set_provided

#: Algorithm name stored in checkpoint metadata.
ALGORITHM_NAME = "DPOER"


class DPOERConfig(DPPOConfig):
    """Config of :class:`DPOER`: DPPO's knobs and defaults plus the temperature's (the
    seed's values)."""

    def __init__(self, algo_class=None) -> None:
        super().__init__(algo_class=algo_class or DPOER)
        self.entropy_loss_scale = 1e-4  # 1/λ, the seed's lambda_alpha_entropy = 10,000
        self.initial_alpha = 0.272
        self.alpha_lr = 3e-4
        self.target_entropy_per_dim = -1.0
        self.entropy_interval = 50
        self.entropy_estimator: Literal["gmm", "gaussian"] = "gmm"

    @override(DPPOConfig)
    def training(
        self,
        *,
        entropy_loss_scale: float | None = NotProvided,
        initial_alpha: float | None = NotProvided,
        alpha_lr: float | None = NotProvided,
        target_entropy_per_dim: float | None = NotProvided,
        entropy_interval: int | None = NotProvided,
        entropy_estimator: Literal["gmm", "gaussian"] | None = NotProvided,
        **kwargs: Any,
    ) -> DPOERConfig:
        """DPOER knobs (plus DPPO's ``training()`` args, with DPPO's defaults).

        Args:
            entropy_loss_scale: weight s = 1/λ of ``s·α·log π`` in the surrogate's unclipped
                branch; seed 1e-4 (λ = 10,000; its Square C1000 variant 1e-3). 0 turns the
                term off: the policy update is DPPO's.
            initial_alpha: initial temperature α (seed 0.272).
            alpha_lr: Adam learning rate of α itself (not log α), one step per minibatch
                (seed 3e-4).
            target_entropy_per_dim: target entropy per action element; the target is this
                times ``horizon × action_dim`` (seed: −Ta·Da for every task, e.g. −12 on
                Hopper).
            entropy_interval: re-estimate the entropy every this many minibatches, reuse it
                in between (seed 50).
            entropy_estimator: ``gmm``: the seed's estimate (a 3-component Gaussian mixture
                fitted per row to the Ta action rows of one sampled denoising step);
                ``gaussian``: the closed-form entropy of that step's Gaussian (ours).
        """
        super().training(**kwargs)
        set_provided(
            self,
            {
                "entropy_loss_scale": entropy_loss_scale,
                "initial_alpha": initial_alpha,
                "alpha_lr": alpha_lr,
                "target_entropy_per_dim": target_entropy_per_dim,
                "entropy_interval": entropy_interval,
                "entropy_estimator": entropy_estimator,
            },
        )
        return self

    @override(DPPOConfig)
    def get_default_learner_class(self):
        from rllib_diffusion.algorithms.dppo.dpoer_learner import DPOERTorchLearner

        return DPOERTorchLearner

    @override(DPPOConfig)
    def validate(self) -> None:
        super().validate()
        if self.entropy_loss_scale < 0:
            self._value_error(f"entropy_loss_scale must be >= 0, got {self.entropy_loss_scale}.")
        if self.initial_alpha <= 0 or self.alpha_lr < 0:
            self._value_error(
                f"initial_alpha must be > 0 and alpha_lr >= 0, got {self.initial_alpha} and "
                f"{self.alpha_lr}."
            )
        if self.entropy_interval < 1:
            self._value_error(f"entropy_interval must be >= 1, got {self.entropy_interval}.")
        if self.entropy_estimator not in ("gmm", "gaussian"):
            self._value_error(
                f"entropy_estimator must be 'gmm' or 'gaussian', got {self.entropy_estimator!r}."
            )


class DPOER(DPPO):
    """DPPO's sample → update → sync loop with DPOER's config and learner."""

    @classmethod
    @override(DPPO)
    def get_default_config(cls) -> DPOERConfig:
        return DPOERConfig()
