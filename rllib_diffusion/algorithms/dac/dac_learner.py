"""DAC learner (Fang et al. 2024): diffusion noise regression toward the soft Q-gradient.

actor:  a_t = sqrt(ᾱ_t)·a + sqrt(1−ᾱ_t)·ε (dataset action a),
        g = ∇_{a_t} mean_h Q′_h(s, a_t) / (mean|Q′(s, a)| + 1e-6),
        L = η·‖ε̂ − ε‖² + mean(sqrt(1−ᾱ_t)·g·ε̂)           (no backprop through the sampler)
η:      η ← clip(η + η_lr·clip(L_bc − threshold, −1, 1), 0.001, 100) after every step
critic: y = r + γ(1−d)·(mean_h Q̄′_h − ρ·std_h Q̄′_h),  Q̄′_h = mean over M next actions
        from the EMA actor (lower confidence bound over the ensemble heads)
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
from rllib_diffusion.diffusion.schedules import _extract


def lcb_target(module, batch, *, gamma: float, rho: float, num_samples: int) -> torch.Tensor:
    """DAC's critic target ``(B,)``: LCB over heads of the per-head mean over next actions."""
    with torch.no_grad():
        next_obs = batch[Columns.NEXT_OBS].float()
        b = next_obs.shape[0]
        rep = next_obs.repeat_interleave(num_samples, dim=0)
        q = module.critic_target(rep, module.sample(rep, ema=True))  # (H, B*M)
        q = q.view(q.shape[0], b, num_samples).mean(dim=2)  # (H, B)
        return td_target(batch, q.mean(dim=0) - rho * q.std(dim=0), gamma)


def dual_eta_step(eta: float, bc_loss: float, *, lr: float, threshold: float) -> float:
    """One dual-ascent step of η (raise it while the BC loss is above the threshold)."""
    return float(min(max(eta + lr * max(min(bc_loss - threshold, 1.0), -1.0), 0.001), 100.0))


class DACTorchLearner(SeparateLossesMixin, TorchLearner):
    OPTIMIZER_ORDER = (ACTOR, CRITIC)

    @override(TorchLearner)
    def build(self) -> None:
        super().build()
        self._last_bc_loss: dict = {}
        # η starts at η₀; a checkpoint restored after build() overwrites it.
        for module_id in self.module.keys():
            eta0 = self.config.get_config_for_module(module_id).eta
            self.module[module_id].unwrapped().dual_eta.fill_(eta0)

    @override(TorchLearner)
    def configure_optimizers_for_module(self, module_id, config=None) -> None:
        module = self.module[module_id].unwrapped()
        register_adam_optimizers(
            self,
            module_id,
            ((ACTOR, module.actor, config.actor_lr), (CRITIC, module.critic, config.critic_lr)),
        )

    def actor_loss(self, module, obs, actions, t, noise) -> tuple[torch.Tensor, torch.Tensor]:
        """``(L, L_bc)`` for dataset ``actions`` (B, Da), steps ``t`` (B,), noise (B, 1, Da)."""
        sched = module.schedule
        x0 = actions.unsqueeze(1)
        a_t = sched.q_sample(x0, t, noise).detach().requires_grad_(True)
        with torch.enable_grad():
            q_t = module.critic_target(obs, a_t[:, 0]).mean(dim=0)
            (grad,) = torch.autograd.grad(q_t.sum(), a_t)
        with torch.no_grad():
            scale = module.critic_target(obs, actions).abs().mean() + 1e-6
            sigma = _extract(sched.sqrt_one_minus_alphas_cumprod, t, x0)
            guide = sigma * grad / scale
        eps_hat = module.actor(a_t.detach(), t, obs)
        bc = ((eps_hat - noise) ** 2).sum(dim=(1, 2)).mean()
        q_term = (guide * eps_hat).sum(dim=(1, 2)).mean()
        return module.dual_eta.detach() * bc + q_term, bc

    @override(TorchLearner)
    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out) -> torch.Tensor:
        module = self.module[module_id].unwrapped()
        obs, actions = transition_batch(batch)

        y = lcb_target(
            module,
            batch,
            gamma=config.gamma,
            rho=config.lcb_rho,
            num_samples=config.num_target_samples,
        )
        q = module.critic(obs, actions)
        critic_loss = ensemble_mse(q, y)

        t = torch.randint(0, module.schedule.num_steps, (obs.shape[0],), device=obs.device)
        noise = torch.randn(obs.shape[0], 1, actions.shape[1], device=obs.device)
        actor_loss, bc = self.actor_loss(module, obs, actions, t, noise)
        self._last_bc_loss[module_id] = float(bc.detach())

        self._temp_losses[(module_id, ACTOR)] = actor_loss
        self._temp_losses[(module_id, CRITIC)] = critic_loss
        self.metrics.log_dict(
            {
                M.ACTOR_LOSS: actor_loss.detach(),
                M.CRITIC_LOSS: critic_loss.detach(),
                M.BC_LOSS: bc.detach(),
                M.DUAL_ETA: module.dual_eta.clone(),
                M.Q_MEAN: q.mean().detach(),
                M.TARGET_MEAN: y.mean(),
            },
            key=module_id,
            window=1,
        )
        return actor_loss + critic_loss

    def update_targets(self, module_id) -> None:
        super().update_targets(module_id)
        cfg = self.config.get_config_for_module(module_id)
        module = self.module[module_id].unwrapped()
        if module_id in self._last_bc_loss:
            module.dual_eta.fill_(
                dual_eta_step(
                    float(module.dual_eta),
                    self._last_bc_loss.pop(module_id),
                    lr=cfg.eta_lr,
                    threshold=cfg.bc_threshold,
                )
            )
