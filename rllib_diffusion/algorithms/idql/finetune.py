"""IDQL fine-tuning: online IDQL of a pretrained diffusion policy from an empty replay
(the DPPO paper's baseline), ``rllib-diffusion finetune --algo idql``.

The pretrained (DiffusionBC) denoiser is the actor, trained by plain denoising BC on
the replay's actions; IQL critics: V(s) by expectile regression on ``min_i Q'_i(s, a)``,
twin Q on ``y = r·reward_scale + γ(1 − d)·V(s')`` (``finetune_learner``). Acting samples
``num_candidates`` chunks per state and picks one: exploring by expectile weights
``|τ_e − 1(Q' − V < 0)|`` (``exploration_expectile``), deterministically by the argmax of
``min_i Q'_i``. The loop (replay, warm-up, checkpoints) is
:mod:`~rllib_diffusion.algorithms.replay_finetune`.

Defaults are the reference's Hopper config (irom-lab/dppo ``cfg/gym/finetune/hopper-v2/
ft_idql_diffusion_mlp.yaml``; loop ``agent/finetune/train_idql_diffusion_agent.py``,
model ``model/diffusion/diffusion_idql.py``): actor lr 1e-4, critic lr 1e-3 (Q and V),
τ 0.001, rewards × 0.01, buffer 25,000 vector steps × 40 envs = 1,000,000 decisions,
replay ratio 128, minibatch 1000, warm-up 80,000 decisions, 20 candidates, expectile
0.8 for V (the reference's ``expectile_loss`` default) and 0.7 for the exploration
weights, V a residual Mish 256-256-256 MLP. Deviations: one forward for the three losses
per step (the reference steps V, then Q with the new V); the warm-up counts decisions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.annotations import override
from torch import Tensor

from rllib_diffusion.algorithms.pretrained_actor_critic import (
    PretrainedActorCriticConfig,
    PretrainedActorCriticModule,
)
from rllib_diffusion.algorithms.replay_finetune import (
    ReplayFinetuneConfigMixin,
    ReplayFinetuneMixin,
)
from rllib_diffusion.diffusion import MLP
from rllib_diffusion.knobs import Count, set_provided

#: Algorithm name stored in checkpoint metadata.
IDQL_NAME = "IDQL"


@dataclass
class IDQLFinetuneModelConfig(PretrainedActorCriticConfig):
    """The shared model config plus IDQL's acting.

    Attributes:
        num_candidates: chunks sampled per state when acting (reference
            ``eval_sample_num`` 20); 1 acts as the denoiser alone.
        exploration_expectile: τ_e of the exploring pick's weights
            ``|τ_e − 1(Q' − V < 0)|`` (reference ``critic_hyperparam`` 0.7).
        expectile_exploration: explore by those weights (reference
            ``use_expectile_exploration``); False: the argmax of Q' there too.
    """

    num_candidates: Count = 20
    exploration_expectile: float = 0.7
    expectile_exploration: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.exploration_expectile < 1:
            from rllib_diffusion.modules.model_config import ConfigError

            raise ConfigError(
                f"exploration_expectile must be in (0, 1), got {self.exploration_expectile}."
            )


def expectile_weights(adv: Tensor, expectile: float) -> Tensor:
    """``|τ − 1(adv < 0)|``: τ where ``Q' ≥ V``, ``1 − τ`` below (same shape as ``adv``)."""
    return (expectile - (adv < 0).float()).abs()


class IDQLFinetuneModule(PretrainedActorCriticModule):
    """Pretrained denoiser, twin Q, V(s); acting ranks candidates (needs ``critic_target``
    and ``value`` on the EnvRunners)."""

    MODEL_CONFIG = IDQLFinetuneModelConfig
    RUNNER_NETWORKS = ("critic_target", "value")

    @override(PretrainedActorCriticModule)
    def setup(self) -> None:
        super().setup()
        cfg, pol = self.finetune_config, self.policy_config
        self.value = MLP(pol.obs_dim, 1, cfg.critic_hidden_dims, residual=True)

    @override(PretrainedActorCriticModule)
    def select_actions(self, obs: Tensor, *, explore: bool) -> Tensor:
        """``num_candidates`` chunks per state (exploring or deterministic chains), one
        picked by expectile weights (exploring) or the argmax of ``min_i Q'_i``."""
        cfg = self.finetune_config
        b, n = obs.shape[0], cfg.num_candidates
        rep = obs.float().repeat_interleave(n, dim=0)
        cand = self.sample(rep, deterministic=not explore)  # (B·n, Ta, Da)
        q = self.critic_target(rep, cand.flatten(1)).min(dim=0).values.view(b, n)
        if explore and cfg.expectile_exploration:
            adv = q - self.value(rep).view(b, n)
            weights = expectile_weights(adv, cfg.exploration_expectile)
            idx = torch.multinomial(weights, 1).squeeze(1)
        else:
            idx = q.argmax(dim=1)
        return cand.view(b, n, *cand.shape[1:])[torch.arange(b, device=obs.device), idx]


class IDQLFinetuneConfig(ReplayFinetuneConfigMixin, AlgorithmConfig):
    """Config of :class:`IDQLFinetune` (reference Hopper defaults; see the module doc)."""

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or IDQLFinetune)
        self.tau = 0.001
        self.replay_ratio = 128.0
        self.expectile = 0.8

    @override(AlgorithmConfig)
    def training(
        self, *, expectile: float | None = NotProvided, **kwargs: Any
    ) -> IDQLFinetuneConfig:
        """IDQL's knobs (and the shared ones, see ``ReplayFinetuneConfigMixin.training``).

        Args:
            expectile: τ of V's expectile regression (reference 0.8).
        """
        super().training(**kwargs)
        set_provided(self, {"expectile": expectile})
        return self

    @override(AlgorithmConfig)
    def get_default_rl_module_spec(self) -> RLModuleSpec:
        return RLModuleSpec(module_class=IDQLFinetuneModule)

    @override(AlgorithmConfig)
    def get_default_learner_class(self) -> type:
        from rllib_diffusion.algorithms.idql.finetune_learner import IDQLFinetuneLearner

        return IDQLFinetuneLearner

    @override(AlgorithmConfig)
    def validate(self) -> None:
        super().validate()
        if not 0 < self.expectile < 1:
            self._value_error(f"expectile must be in (0, 1), got {self.expectile}.")


class IDQLFinetune(ReplayFinetuneMixin, Algorithm):
    """IDQL fine-tuning: IQL critics and denoising BC on the replay, Q-ranked acting."""

    @classmethod
    @override(Algorithm)
    def get_default_config(cls) -> IDQLFinetuneConfig:
        return IDQLFinetuneConfig()
