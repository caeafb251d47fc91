"""TD3+BC learner (Fujimoto & Gu 2021), as the official code (github.com/sfujim/TD3_BC,
``TD3_BC.py``). Glossary: B batch, Da action dims, H = 2 critic heads; m = max_action.

noise:   ε = clip(N(0, (σ·m)²), −c·m, c·m)            (σ = policy_noise, c = noise_clip)
target:  ã′ = clip(π′(s′) + ε, −m, m),  y = r + γ(1 − d)·min_h Q′_h(s′, ã′)
critic:  L_Q = Σ_h mean_b (Q_h(s, a) − y)²                             (every step)
actor:   L_π = −λ·mean_b Q_1(s, π(s)) + mean_{b,i} (π(s)_i − a_i)²,
         λ = α / stopgrad(mean_b |Q_1(s, π(s))|)      (every ``policy_freq``-th step)
targets: Polyak (τ) on the critics and the actor, on the actor's steps only.

States are normalised inside the module. One deviation: RLlib computes every loss of a
step before any optimizer steps, so the actor's Q term sees the critic of before this
step's critic update (the official code updates the critic first).
"""

from __future__ import annotations

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.utils.annotations import override

from rllib_diffusion import metrics as M
from rllib_diffusion.algorithms.actor_critic import (
    ACTOR,
    CRITIC,
    SeparateLossesMixin,
    ensemble_mse,
    register_adam_optimizers,
    td_target,
    transition_batch,
)
from rllib_diffusion.algorithms.finite_gradients import SkipNonFiniteStepsMixin
from rllib_diffusion.algorithms.mixed_precision import MixedPrecisionMixin
from rllib_diffusion.modules.critics import polyak_update_


def is_policy_step(step: int, policy_freq: int) -> bool:
    """Whether gradient step ``step`` (1-based, the official ``total_it``) updates the
    actor and the targets: ``step % policy_freq == 0``."""
    return step % policy_freq == 0


def target_policy_noise(like: torch.Tensor, std: float, clip: float) -> torch.Tensor:
    """``ε = clip(N(0, std²), −clip, clip)``, shaped like ``like`` (B, Da)."""
    return (torch.randn_like(like) * std).clamp(-clip, clip)


def smoothed_target_action(
    target_action: torch.Tensor, noise: torch.Tensor, max_action: float
) -> torch.Tensor:
    """``ã′ = clip(π′(s′) + ε, −max_action, max_action)`` (B, Da)."""
    return (target_action + noise).clamp(-max_action, max_action)


def clipped_double_q(q_next: torch.Tensor) -> torch.Tensor:
    """``min_h Q′_h`` of ``q_next`` (H, B) → (B,)."""
    return q_next.min(dim=0).values


def td3bc_actor_loss(
    q1_pi: torch.Tensor, pi: torch.Tensor, actions: torch.Tensor, alpha: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``L_π = −λ·mean_b Q_1(s_b, π(s_b)) + mean_{b,i} (π(s_b)_i − a_{b,i})²`` with
    ``λ = α / stopgrad(mean_b |Q_1(s_b, π(s_b))|)``; ``q1_pi`` (B,), ``pi`` and
    ``actions`` (B, Da). Returns ``(L_π, λ, BC term)``."""
    lam = alpha / q1_pi.abs().mean().detach()
    bc = ((pi - actions) ** 2).mean()
    return -lam * q1_pi.mean() + bc, lam, bc


class TD3BCTorchLearner(
    MixedPrecisionMixin, SkipNonFiniteStepsMixin, SeparateLossesMixin, TorchLearner
):
    # The actor's Q term reaches the critic: actor first (its grads there are dropped).
    OPTIMIZER_ORDER = (ACTOR, CRITIC)

    @override(TorchLearner)
    def configure_optimizers_for_module(self, module_id, config=None) -> None:
        module = self.module[module_id].unwrapped()
        register_adam_optimizers(
            self,
            module_id,
            (
                (ACTOR, module.actor, config.actor_lr),
                (CRITIC, module.critic, config.critic_lr),
            ),
        )

    @override(TorchLearner)
    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out) -> torch.Tensor:
        module = self.module[module_id].unwrapped()
        obs, actions = transition_batch(batch)
        m = module.max_action
        with torch.no_grad():
            next_obs = batch[Columns.NEXT_OBS].float()
            noise = target_policy_noise(actions, config.policy_noise * m, config.noise_clip * m)
            next_a = smoothed_target_action(module.policy_actions(next_obs, target=True), noise, m)
            q_next = clipped_double_q(module.q_values(next_obs, next_a, target=True))
            y = td_target(batch, q_next, config.gamma)
        q = module.q_values(obs, actions)
        critic_loss = ensemble_mse(q, y)
        self._temp_losses[(module_id, CRITIC)] = critic_loss
        logged = {
            M.CRITIC_LOSS: critic_loss.detach(),
            M.Q_MEAN: q.mean().detach(),
            M.TARGET_MEAN: y.mean(),
            M.TD_ERROR: (q.detach() - y).abs().mean(),
        }
        total = critic_loss
        if is_policy_step(int(module.train_step) + 1, config.policy_freq):
            pi = module.policy_actions(obs)
            q1_pi = module.q1(obs, pi)
            actor_loss, lam, bc = td3bc_actor_loss(q1_pi, pi, actions, config.alpha)
            self._temp_losses[(module_id, ACTOR)] = actor_loss
            total = total + actor_loss
            logged.update(
                {
                    M.ACTOR_LOSS: actor_loss.detach(),
                    M.BC_LOSS: bc.detach(),
                    M.Q_POLICY_MEAN: q1_pi.mean().detach(),
                    M.Q_WEIGHT: lam,
                }
            )
        self.metrics.log_dict(logged, key=module_id, window=1)
        return total

    @override(SeparateLossesMixin)
    def update_targets(self, module_id) -> None:
        """Count the step; on the actor's steps, Polyak-update both target networks."""
        cfg = self.config.get_config_for_module(module_id)
        module = self.module[module_id].unwrapped()
        module.train_step += 1
        if is_policy_step(int(module.train_step), cfg.policy_freq):
            polyak_update_(module.critic_target, module.critic, cfg.tau)
            polyak_update_(module.actor_target, module.actor, cfg.tau)
