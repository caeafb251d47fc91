"""DAC learner (Fang et al. 2024): diffusion noise regression toward the soft Q-gradient.

Defaults follow the official code (github.com/Fang-Lin93/DAC, ``agents/dac.py``); the
``DACConfig`` options name the alternatives. Glossary: B batch, Da action dims, H heads.

actor:  a_t = sqrt(ᾱ_t)·a + sqrt(1−ᾱ_t)·ε (dataset action a),
        g = ∇_{a_t} mean_h Q′_h(s, a_t) / (mean|Q′(s, a)| + 1e-6),
        L_bc = mean_{b,d} (ε̂ − ε)²,  L_g = mean_{b,d} sqrt(1−ᾱ_t)·g·ε̂,
        L = η·L_bc + L_g                                  (no backprop through the sampler)
η:      η ← clip(η + η_lr·clip(L_bc − threshold, −1, 1), 0.001, 100) after every step
critic: y = r + γ(1−d)·(mean_h Q̄′_h − ρ·std_h Q̄′_h),  Q̄′_h = mean over M next actions
        from the EMA actor (lower confidence bound, population std over the heads),
        L_Q = mean_{h,b} (Q_h(s, a) − y)²
lr:     lr_k = lr_0·½(1 + cos(π·min(k, K)/K)) at gradient step k (K = lr_decay_steps)
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
    CosineLRMixin,
    SeparateLossesMixin,
    acting_policy_q,
    cosine_lr,
    register_adam_optimizers,
    td_target,
    transition_batch,
)
from rllib_diffusion.algorithms.finite_gradients import SkipNonFiniteStepsMixin
from rllib_diffusion.algorithms.mixed_precision import MixedPrecisionMixin
from rllib_diffusion.diffusion.schedules import extract_at

__all__ = ["DACTorchLearner", "cosine_lr"]


def reduce_actions(x: torch.Tensor, reduction: str) -> torch.Tensor:
    """``mean_b reduce_d x`` for ``x`` (B, 1, Da): reduce = mean (official) or sum."""
    per_sample = x.mean(dim=(1, 2)) if reduction == "mean" else x.sum(dim=(1, 2))
    return per_sample.mean()


def bc_loss(eps_hat: torch.Tensor, noise: torch.Tensor, reduction: str) -> torch.Tensor:
    """``L_bc = mean_b reduce_d (ε̂ − ε)²`` (reduce over action dims: mean or sum)."""
    return reduce_actions((eps_hat - noise) ** 2, reduction)


def guidance_loss(guide: torch.Tensor, eps_hat: torch.Tensor, reduction: str) -> torch.Tensor:
    """``L_g = mean_b reduce_d sqrt(1−ᾱ_t)·g·ε̂`` with ``guide = sqrt(1−ᾱ_t)·g`` (no grad)."""
    return reduce_actions(guide * eps_hat, reduction)


def critic_loss(q: torch.Tensor, y: torch.Tensor, reduction: str) -> torch.Tensor:
    """``mean_{h,b} (Q_h − y)²`` ("mean", official) or ``Σ_h mean_b (Q_h − y)²`` ("sum")
    for ``q`` (H, B) and targets ``y`` (B,)."""
    per_head = ((q - y.unsqueeze(0)) ** 2).mean(dim=1)
    return per_head.mean() if reduction == "mean" else per_head.sum()


def lcb(q: torch.Tensor, rho: float, ddof: int = 0) -> torch.Tensor:
    """``mean_h q − ρ·std_h q`` over heads (dim 0); ddof 0 is the population std."""
    return q.mean(dim=0) - rho * q.std(dim=0, correction=ddof)


def lcb_target(
    module, batch, *, gamma: float, rho: float, num_samples: int, ddof: int = 0
) -> torch.Tensor:
    """DAC's critic target ``(B,)``: LCB over heads of the per-head mean over next actions."""
    with torch.no_grad():
        next_obs = batch[Columns.NEXT_OBS].float()
        b = next_obs.shape[0]
        rep = next_obs.repeat_interleave(num_samples, dim=0)
        q = module.critic_target(rep, module.sample(rep, ema=True))  # (H, B*M)
        q = q.view(q.shape[0], b, num_samples).mean(dim=2)  # (H, B)
        return td_target(batch, lcb(q, rho, ddof), gamma)


def dual_eta_step(eta: float, bc_loss: float, *, lr: float, threshold: float) -> float:
    """One dual-ascent step of η (raise it while the BC loss is above the threshold)."""
    return float(min(max(eta + lr * max(min(bc_loss - threshold, 1.0), -1.0), 0.001), 100.0))


class DACTorchLearner(
    CosineLRMixin, MixedPrecisionMixin, SkipNonFiniteStepsMixin, SeparateLossesMixin, TorchLearner
):
    OPTIMIZER_ORDER = (ACTOR, CRITIC)

    @override(TorchLearner)
    def build(self) -> None:
        super().build()
        self._last_bc_loss: dict = {}
        self._eta_inputs: dict = {}
        # η starts at η₀; a checkpoint restored after build() overwrites it.
        for module_id in self.module.keys():
            eta0 = self.config.get_config_for_module(module_id).eta
            self.module[module_id].unwrapped().dual_eta.fill_(eta0)

    @override(TorchLearner)
    def configure_optimizers_for_module(self, module_id, config=None) -> None:
        """Adam per net. With ``lr_decay_steps`` (offline, float rates) the learner sets
        the cosine-decayed rate before every gradient step (by the module's step count,
        as optax does), so RLlib's scheduler is not registered for it."""
        module = self.module[module_id].unwrapped()
        decay = config.lr_decay_steps if not config.is_online else None
        pairs = ((ACTOR, module.actor, config.actor_lr), (CRITIC, module.critic, config.critic_lr))
        nets = [
            (name, net, self.cosine_or_lr(module_id, name, lr, decay)) for name, net, lr in pairs
        ]
        register_adam_optimizers(self, module_id, nets)
        self.set_cosine_lrs(module_id)

    def actor_loss(
        self, module, obs, actions, t, noise, *, reduction: str = "mean"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(L, L_bc)`` for dataset ``actions`` (B, Da), steps ``t`` (B,), noise (B, 1, Da);
        ``reduction`` over action dims ("mean", official, or "sum")."""
        sched = module.schedule
        x0 = actions.unsqueeze(1)
        a_t = sched.q_sample(x0, t, noise).detach().requires_grad_(True)
        with torch.enable_grad():
            q_t = module.critic_target(obs, a_t[:, 0]).mean(dim=0)
            (grad,) = torch.autograd.grad(q_t.sum(), a_t)
        with torch.no_grad():
            scale = module.critic_target(obs, actions).abs().mean() + 1e-6
            sigma = extract_at(sched.sqrt_one_minus_alphas_cumprod, t, x0)
            guide = sigma * grad / scale
        eps_hat = module.actor(a_t.detach(), t, obs)
        bc = bc_loss(eps_hat, noise, reduction)
        q_term = guidance_loss(guide, eps_hat, reduction)
        return module.dual_eta.detach() * bc + q_term, bc

    def post_update_bc_loss(self, module, obs, actions, t, noise, reduction: str) -> float:
        """``L_bc`` of the current (updated) actor in eval mode on the same a_t, t, ε."""
        a_t = module.schedule.q_sample(actions.unsqueeze(1), t, noise)
        was_training = module.actor.training
        module.actor.eval()
        try:
            with torch.no_grad():
                return float(bc_loss(module.actor(a_t, t, obs), noise, reduction))
        finally:
            module.actor.train(was_training)

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
            ddof=config.lcb_std_ddof,
        )
        q = module.critic(obs, actions)
        q_loss = critic_loss(q, y, config.critic_loss_reduction)

        t = torch.randint(0, module.schedule.num_steps, (obs.shape[0],), device=obs.device)
        noise = torch.randn(obs.shape[0], 1, actions.shape[1], device=obs.device)
        reduction = config.actor_loss_reduction
        actor_loss, bc = self.actor_loss(module, obs, actions, t, noise, reduction=reduction)
        self._last_bc_loss[module_id] = float(bc.detach())
        if config.eta_bc_loss == "post_update":
            self._eta_inputs[module_id] = (obs, actions, t, noise, reduction)

        self._temp_losses[(module_id, ACTOR)] = actor_loss
        self._temp_losses[(module_id, CRITIC)] = q_loss
        self.metrics.log_dict(
            {
                M.ACTOR_LOSS: actor_loss.detach(),
                M.CRITIC_LOSS: q_loss.detach(),
                M.BC_LOSS: bc.detach(),
                M.DUAL_ETA: module.dual_eta.clone(),
                M.Q_MEAN: q.mean().detach(),
                M.TARGET_MEAN: y.mean(),
                M.TD_ERROR: (q.detach() - y).abs().mean(),
            },
            key=module_id,
            window=1,
        )
        q_policy = acting_policy_q(module, obs)
        if q_policy is not None:
            self.metrics.log_value((module_id, M.Q_POLICY_MEAN), q_policy, window=1)
        return actor_loss + q_loss

    def update_targets(self, module_id) -> None:
        """Polyak/EMA, then η's dual step with the pre- or post-update BC loss."""
        super().update_targets(module_id)
        cfg = self.config.get_config_for_module(module_id)
        module = self.module[module_id].unwrapped()
        bc = self._last_bc_loss.pop(module_id, None)
        inputs = self._eta_inputs.pop(module_id, None)
        if bc is None:
            return
        if inputs is not None:
            bc = self.post_update_bc_loss(module, *inputs)
        module.dual_eta.fill_(
            dual_eta_step(float(module.dual_eta), bc, lr=cfg.eta_lr, threshold=cfg.bc_threshold)
        )
