"""ReinFlow (Zhang et al., NeurIPS 2025): fine-tune a pretrained flow policy with PPO on a
noisy Euler chain whose noise std a network learns.

A sibling of DPPO on the same chain-PPO learner, run loop and checkpoints: only the
module (:class:`ReinFlowModule`: whole-chain log-probs and an entropy), the defaults
(the official code's gym locomotion configs, ``cfg/gym/finetune/hopper-v2/
ft_ppo_reflow_mlp.yaml``), an entropy bonus and the decay of the noise std's upper
bound differ. Start from a flow DiffusionBC checkpoint
(``rllib-diffusion pretrain --sampler flow``) with
``rllib-diffusion finetune --algo reinflow``.
"""

from __future__ import annotations

import math
from typing import Any

from ray.rllib.algorithms.algorithm_config import NotProvided
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.annotations import override

from rllib_diffusion.algorithms.dppo.dppo import DPPO, DPPOConfig
from rllib_diffusion.algorithms.synthetic_ppo import POLICY_ACTIONS
from rllib_diffusion.knobs import set_provided
from rllib_diffusion.modules.model_config import ConfigError

#: Algorithm name stored in checkpoint metadata.
ALGORITHM_NAME = "ReinFlow"

#: DPPO knobs that ReinFlow's whole-chain ratio ignores, with their (unchanged) values:
#: one clip for the single ratio step, no denoising discount. (``bc_loss_coeff`` weights
#: ReinFlow's own W2 regulariser, see ``ReinFlowTorchLearner``.)
IGNORED_DPPO_KNOBS = {"clip_param_base": 0.01, "gamma_denoising": 0.99}


def max_std_schedule(
    iteration: int,
    *,
    min_std: float,
    max_std: float,
    iterations: int | None,
    hold_ratio: float,
    decay_ratio: float,
) -> float:
    """Upper bound of the noise std after ``iteration`` updates (official "learn_decay").

    Held at ``max_std`` for ``hold_ratio·iterations`` iterations, then a cosine to
    ``min_std·(1 − decay_ratio) + max_std·decay_ratio`` over the remaining ones;
    ``iterations`` None keeps ``max_std``.
    """
    if iterations is None:
        return max_std
    low = min_std * (1 - decay_ratio) + max_std * decay_ratio
    hold, anneal = int(iterations * hold_ratio), int(iterations * (1 - hold_ratio))
    frac = min(max((iteration - hold) / max(anneal, 1), 0.0), 1.0)
    return low + (max_std - low) * 0.5 * (1 + math.cos(frac * math.pi))


def cosine_warm_restarts(
    iteration: int, *, max_lr: float, min_lr: float, cycle: int, warmup: int
) -> float:
    """The official ``CosineAnnealingWarmupRestarts`` (cycle_mult 1, gamma 1) at
    ``iteration``: each cycle of ``cycle`` iterations rises linearly from ``min_lr`` to
    ``max_lr`` over ``warmup`` iterations, then follows a half cosine back to ``min_lr``."""
    step = iteration % cycle
    if step < warmup:
        return min_lr + (max_lr - min_lr) * step / warmup
    return (
        min_lr
        + (max_lr - min_lr) * (1 + math.cos(math.pi * (step - warmup) / (cycle - warmup))) / 2
    )


class ReinFlowConfig(DPPOConfig):
    """Config of :class:`ReinFlow`: DPPO's knobs with ReinFlow's defaults, plus its own.

    Model knobs (noise std bounds, noise net, log-prob clamp, critic size) live in
    ``model_config`` as a ``ReinFlowModelConfig`` dict.
    """

    RLLIB_KNOBS = {
        **DPPOConfig.RLLIB_KNOBS,
        "clip_param": "PPO ratio clip (one ratio per env step: the whole chain's).",
        "entropy_coeff": "weight of the entropy bonus (the chain's entropy rate per dim).",
    }
    ENTROPY_BONUS = True

    def __init__(self, algo_class=None) -> None:
        super().__init__(algo_class=algo_class or ReinFlow)
        # Official gym locomotion values (Hopper; Walker2d/HalfCheetah differ in the lrs).
        self.actor_lr = 4.5e-5
        self.critic_lr = 6.5e-4
        self.weight_decay = 0.0
        self.critic_weight_decay = 1e-5
        self.entropy_coeff = 0.03
        self.clip_param = 0.01
        self.repeat_samples = 10
        # Official: 50,000 rows of 20,000 decisions (40 envs × 500 steps) × 10 repeats,
        # 4 minibatches per epoch; 5,000 keeps 4 at the default 2,000 decisions.
        self.pair_minibatch_size = 5_000
        self.noise_decay_iterations: int | None = 1000
        self.noise_hold_ratio = 0.35
        self.noise_decay_ratio = 0.7
        self.lr_cycle_iterations: int | None = 100
        self.lr_warmup_iterations = 10
        self.actor_min_lr = 2e-5
        self.critic_min_lr = 3e-4

    @override(DPPOConfig)
    def training(
        self,
        *,
        critic_weight_decay: float | None = NotProvided,
        repeat_samples: int | None = NotProvided,
        noise_decay_iterations: int | None = NotProvided,
        noise_hold_ratio: float | None = NotProvided,
        noise_decay_ratio: float | None = NotProvided,
        lr_cycle_iterations: int | None = NotProvided,
        lr_warmup_iterations: int | None = NotProvided,
        actor_min_lr: float | None = NotProvided,
        critic_min_lr: float | None = NotProvided,
        **kwargs: Any,
    ) -> ReinFlowConfig:
        """ReinFlow knobs (plus DPPO's ``training()`` args; ``actor_lr`` 4.5e-5,
        ``critic_lr`` 6.5e-4, ``entropy_coeff`` 0.03 by default, as the official Hopper run;
        ``bc_loss_coeff`` weights the official W2 regulariser, off by default as there).

        Args:
            critic_weight_decay: AdamW weight decay of the critic (``weight_decay`` is the
                actor's); official 1e-5.
            repeat_samples: copies of each env step in an epoch's minibatches (official
                ``repeat_samples`` with its fixed multiplier 10); 1 takes each once.
            noise_decay_iterations: iterations over which the noise std's upper bound
                decays (official "learn_decay" over ``n_train_itr`` = 1000); None keeps it
                at ``max_std``.
            noise_hold_ratio: fraction of ``noise_decay_iterations`` at ``max_std`` before
                the cosine decay (official 0.35).
            noise_decay_ratio: the bound decays to ``min_std·(1 − r) + max_std·r``
                (official 0.7).
            lr_cycle_iterations: iterations per cycle of the cosine learning-rate schedule
                with warm restarts (official ``first_cycle_steps`` 100); None keeps
                ``actor_lr`` and ``critic_lr`` constant.
            lr_warmup_iterations: linear warm-up from the minimum at the start of each
                cycle (official 10).
            actor_min_lr: the actor schedule's minimum (official 2e-5).
            critic_min_lr: the critic schedule's minimum (official 3e-4).
        """
        super().training(**kwargs)
        set_provided(
            self,
            {
                "critic_weight_decay": critic_weight_decay,
                "repeat_samples": repeat_samples,
                "noise_decay_iterations": noise_decay_iterations,
                "noise_hold_ratio": noise_hold_ratio,
                "noise_decay_ratio": noise_decay_ratio,
                "lr_cycle_iterations": lr_cycle_iterations,
                "lr_warmup_iterations": lr_warmup_iterations,
                "actor_min_lr": actor_min_lr,
                "critic_min_lr": critic_min_lr,
            },
        )
        return self

    @override(DPPOConfig)
    def resolved_weight_decay(self, optimizer: str) -> float:
        return self.critic_weight_decay if optimizer == "critic" else self.weight_decay

    @override(DPPOConfig)
    def iteration_lr(self, optimizer: str, iteration: int) -> float | None:
        if self.lr_cycle_iterations is None:
            return None
        actor = optimizer == "actor"
        return cosine_warm_restarts(
            iteration,
            max_lr=self.actor_lr if actor else self.critic_lr,
            min_lr=self.actor_min_lr if actor else self.critic_min_lr,
            cycle=self.lr_cycle_iterations,
            warmup=self.lr_warmup_iterations,
        )

    def max_std_after(self, iteration: int, min_std: float, max_std: float) -> float:
        """The noise std's upper bound after ``iteration`` completed updates."""
        return max_std_schedule(
            iteration,
            min_std=min_std,
            max_std=max_std,
            iterations=self.noise_decay_iterations,
            hold_ratio=self.noise_hold_ratio,
            decay_ratio=self.noise_decay_ratio,
        )

    @override(DPPOConfig)
    def get_default_rl_module_spec(self) -> RLModuleSpec:
        from rllib_diffusion.algorithms.dppo.reinflow_rl_module import ReinFlowModule

        return RLModuleSpec(module_class=ReinFlowModule)

    @override(DPPOConfig)
    def get_default_learner_class(self):
        from rllib_diffusion.algorithms.dppo.reinflow_learner import ReinFlowTorchLearner

        return ReinFlowTorchLearner

    @override(DPPOConfig)
    def validate(self) -> None:
        super().validate()
        if self.synthetic_actions != POLICY_ACTIONS:
            raise ConfigError(
                f"--synthetic-actions {self.synthetic_actions} draws DDPM/DDIM posterior "
                "chains ending at generated chunks; none is built for ReinFlow's noisy "
                "flow chain: use --synthetic-actions policy."
            )
        for name, value in IGNORED_DPPO_KNOBS.items():
            if getattr(self, name) != value:
                self._value_error(
                    f"{name} does not apply to ReinFlow (one ratio per chain); drop it."
                )
        if self.entropy_coeff < 0 or self.critic_weight_decay < 0:
            self._value_error(
                f"entropy_coeff and critic_weight_decay must be >= 0, got "
                f"{self.entropy_coeff} and {self.critic_weight_decay}."
            )
        if self.actor_lr is None:
            self._value_error("actor_lr must be set for ReinFlow (official 4.5e-5).")
        if self.repeat_samples < 1:
            self._value_error(f"repeat_samples must be >= 1, got {self.repeat_samples}.")
        if self.noise_decay_iterations is not None and self.noise_decay_iterations < 1:
            self._value_error(
                f"noise_decay_iterations must be >= 1 or None, got {self.noise_decay_iterations}."
            )
        cycle = self.lr_cycle_iterations
        if cycle is not None and not 0 <= self.lr_warmup_iterations < cycle:
            self._value_error(
                f"lr_warmup_iterations must be in [0, lr_cycle_iterations), got "
                f"{self.lr_warmup_iterations} and {cycle}."
            )
        if self.actor_min_lr <= 0 or self.critic_min_lr <= 0:
            self._value_error(
                f"actor_min_lr and critic_min_lr must be > 0, got {self.actor_min_lr} and "
                f"{self.critic_min_lr}."
            )
        for name in ("noise_hold_ratio", "noise_decay_ratio"):
            if not 0 <= getattr(self, name) <= 1:
                self._value_error(f"{name} must be in [0, 1], got {getattr(self, name)}.")


class ReinFlow(DPPO):
    """DPPO's sample → update → sync loop with ReinFlow's config, module and learner."""

    @classmethod
    @override(DPPO)
    def get_default_config(cls) -> ReinFlowConfig:
        return ReinFlowConfig()
