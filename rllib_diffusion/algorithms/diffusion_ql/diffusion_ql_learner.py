"""Diffusion-QL learner (Wang, Hunt, Zhou 2022), DDPM or flow-matching actor.

critic:  Σ_j MSE(Q_j(s, a), y),  y = r + γ(1 − d)·min_j Q′_j(s′, a′),  a′ ~ EMA actor(s′)
actor:   L_d + η·L_q,  L_q = −mean Q_j(s, â) / stopgrad(mean |Q_k(s, â)|),
         â sampled through the whole reverse chain (or Euler integration) with gradients,
         (j, k) a random permutation of two critics.
Targets: Polyak τ every gradient step; EMA actor every ``ema_update_every`` steps after
``ema_start`` (a plain copy before).
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.utils.annotations import override

from rllib_diffusion import metrics as M
from rllib_diffusion.diffusion import denoising_loss, ema_update_, flow_matching_loss
from rllib_diffusion.modules.critics import polyak_update_

ACTOR, CRITIC = "actor", "critic"


def critic_target_values(module, batch: dict[str, Any], gamma: float) -> torch.Tensor:
    """``y = r + γ(1 − d)·min_j Q′_j(s′, a′)``, ``a′`` from the EMA actor; ``(B,)``."""
    with torch.no_grad():
        next_obs = batch[Columns.NEXT_OBS].float()
        next_actions = module.sample(next_obs, ema=True)
        q_next = module.critic_target(next_obs, next_actions).min(dim=0).values
        done = batch[Columns.TERMINATEDS].float()
        return batch[Columns.REWARDS].float() + gamma * (1.0 - done) * q_next


def q_loss_term(q_new: torch.Tensor, perm: tuple[int, int]) -> torch.Tensor:
    """``−mean Q_j / stopgrad(mean |Q_k|)`` for heads ``perm = (j, k)``; ``q_new`` is (H, B)."""
    j, k = perm
    return -q_new[j].mean() / q_new[k].abs().mean().detach()


class SeparateLossesMixin:
    """One backward per optimizer, in the order of ``OPTIMIZER_ORDER``.

    ``compute_loss_for_module`` stores each optimizer's loss in
    ``self._temp_losses[(module_id, name)]``. A loss that reaches another optimizer's
    parameters (the actor's Q term reaches the critic) must come first: the next
    optimizer's ``zero_grad`` drops those contributions before its own backward.
    After every gradient step, ``update_targets(module_id)`` runs (Polyak/EMA).
    """

    OPTIMIZER_ORDER: tuple[str, ...] = ()

    def build(self) -> None:
        super().build()
        self._temp_losses: dict[tuple[Any, str], torch.Tensor] = {}

    def compute_gradients(self, loss_per_module, **kwargs):
        grads = {}
        for module_id in loss_per_module:
            if module_id not in self.module.keys():
                continue
            last = self.OPTIMIZER_ORDER[-1]
            for name in self.OPTIMIZER_ORDER:
                optim = self.get_optimizer(module_id, name)
                optim.zero_grad(set_to_none=True)
                self._temp_losses.pop((module_id, name)).backward(retain_graph=name != last)
                params = self.filter_param_dict_for_optimizer(self._params, optim)
                grads.update(
                    {pid: p.grad.clone() for pid, p in params.items() if p.grad is not None}
                )
        self._temp_losses.clear()
        return grads

    def apply_gradients(self, gradients_dict) -> None:
        super().apply_gradients(gradients_dict)
        for module_id in self.module.keys():
            self.update_targets(module_id)

    def update_targets(self, module_id) -> None:
        """Polyak-update ``critic_target`` (τ) and step the EMA actor schedule (if any)."""
        cfg = self.config.get_config_for_module(module_id)
        module = self.module[module_id].unwrapped()
        module.train_step += 1
        polyak_update_(module.critic_target, module.critic, cfg.tau)
        if not hasattr(module, "ema_actor"):
            return
        step = int(module.train_step)
        if step <= cfg.ema_start:
            ema_update_(module.ema_actor, module.actor, 0.0)
        elif step % cfg.ema_update_every == 0:
            ema_update_(module.ema_actor, module.actor, cfg.ema_decay)


def register_adam_optimizers(learner, module_id, nets_and_lrs) -> None:
    """One Adam optimizer per ``(name, net, lr)``."""
    for name, net, lr in nets_and_lrs:
        params = learner.get_parameters(net)
        learner.register_optimizer(
            module_id=module_id,
            optimizer_name=name,
            optimizer=torch.optim.Adam(params),
            params=params,
            lr_or_lr_schedule=lr,
        )


class DiffusionQLTorchLearner(SeparateLossesMixin, TorchLearner):
    # The actor's Q term reaches the critic: actor first (see SeparateLossesMixin).
    OPTIMIZER_ORDER = (ACTOR, CRITIC)

    @override(TorchLearner)
    def configure_optimizers_for_module(self, module_id, config=None) -> None:
        module = self.module[module_id].unwrapped()
        for name, net, lr in (
            (ACTOR, module.actor, config.actor_lr),
            (CRITIC, module.critic, config.critic_lr),
        ):
            params = self.get_parameters(net)
            self.register_optimizer(
                module_id=module_id,
                optimizer_name=name,
                optimizer=torch.optim.Adam(params),
                params=params,
                lr_or_lr_schedule=lr,
            )

    @override(TorchLearner)
    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out) -> torch.Tensor:
        module = self.module[module_id].unwrapped()
        obs = batch[Columns.OBS].float()
        actions = batch[Columns.ACTIONS].float().reshape(obs.shape[0], -1)

        y = critic_target_values(module, batch, config.gamma)
        q = module.critic(obs, actions)
        critic_loss = ((q - y.unsqueeze(0)) ** 2).mean(dim=1).sum()

        x0 = actions.unsqueeze(1)  # (B, 1, Da): a one-step "chunk"
        if module.dql_config.policy == "flow":
            bc_loss = flow_matching_loss(module.actor, x0, obs)
        else:
            bc_loss = denoising_loss(module.actor, module.schedule, x0, obs)
        new_actions = module.sample(obs, ema=False)
        q_new = module.critic(obs, new_actions)
        perm = tuple(torch.randperm(q_new.shape[0])[:2].tolist())
        q_term = q_loss_term(q_new, perm)
        actor_loss = bc_loss + config.eta * q_term

        self._temp_losses[(module_id, ACTOR)] = actor_loss
        self._temp_losses[(module_id, CRITIC)] = critic_loss
        self.metrics.log_dict(
            {
                M.ACTOR_LOSS: actor_loss.detach(),
                M.CRITIC_LOSS: critic_loss.detach(),
                M.BC_LOSS: bc_loss.detach(),
                M.Q_LOSS: q_term.detach(),
                M.Q_MEAN: q.mean().detach(),
                M.TARGET_MEAN: y.mean(),
            },
            key=module_id,
            window=1,
        )
        return actor_loss + critic_loss
