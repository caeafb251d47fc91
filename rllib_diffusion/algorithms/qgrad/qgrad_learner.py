"""Learners of DIPO and QSM: DIPO's action improvement and denoising BC, QSM's
score-matching loss, on the shared replay fine-tuning update (twin-critic TD loss,
``replay_finetune_learner``).

Glossary: B batch, N = Ta·Da flattened action chunk, Do observation dim.

Each gradient step gets one minibatch of replay transitions (critic) and, once the
critic has warmed up, actor rows ``ACTOR_OBS``/``ACTOR_ACTIONS`` (DIPO: the improved
actions of a second minibatch; QSM: the same transitions). Critic and actor have their
own Adam optimizer and backward (``ReplayFinetuneLearnerMixin``); after each step the
critic targets (and DIPO's target actor) move by Polyak averaging with ``tau``.
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.utils.annotations import override
from torch import Tensor

from rllib_diffusion import metrics as M
from rllib_diffusion.algorithms.actor_critic import ACTOR, CRITIC
from rllib_diffusion.algorithms.replay_finetune_learner import ReplayFinetuneLearnerMixin
from rllib_diffusion.diffusion import denoising_loss
from rllib_diffusion.modules.critics import polyak_update_


def improve_actions(
    critic: torch.nn.Module,
    obs: Tensor,
    actions: Tensor,
    *,
    lr: float,
    steps: int,
    max_grad_norm: float,
) -> Tensor:
    """DIPO's action gradient (the reference's ``TrainDIPODiffusionAgent``): ``steps``
    Adam steps (``lr``, eps 1e-5) on the actions maximising ``Σ_b min_i Q_i(s_b, a_b)``,
    i.e. ``a ← a + lr·m̂/(√v̂ + eps)`` with ``m, v`` Adam's moments of
    ``g = ∇_a min_i Q_i(s, a)``, the gradient of the whole ``(B, N)`` batch clipped to
    norm ``max_grad_norm`` and the actions clamped to [−1, 1] after each step. Only the
    actions move; the critic gets no gradient.

    Args:
        critic: twin Q ``(obs (B, Do), actions (B, N)) -> (2, B)``.
        obs, actions: ``(B, Do)``, ``(B, N)``.

    Returns: the improved actions ``(B, N)`` (no gradient).
    """
    a = actions.detach().clone().requires_grad_(True)
    optim = torch.optim.Adam([a], lr=lr, eps=1e-5)
    for _ in range(steps):
        q = critic(obs, a).min(dim=0).values
        optim.zero_grad()
        (-q.sum()).backward(inputs=[a])
        torch.nn.utils.clip_grad_norm_([a], max_norm=max_grad_norm)
        optim.step()
        with torch.no_grad():
            a.clamp_(-1.0, 1.0)
    return a.detach()


def critic_action_gradient(critic: torch.nn.Module, obs: Tensor, x_t: Tensor) -> Tensor:
    """``g = mean_i ∇_a Q_i(s, a)|_{a = x_t}`` ``(B, N)``, no gradient (the reference's
    QSM averages the twin critics' gradients)."""
    x = x_t.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(obs, x).mean(dim=0).sum(), x)
    return grad.detach()


def qsm_loss(eps_pred: Tensor, q_grad: Tensor, coeff: float) -> Tensor:
    """Q-score matching (the reference's ``QSMDiffusion.loss_actor``):
    ``L = mean_{b,n} (−ε̂(x_t, t, s) − M·∇_a Q(s, x_t))²``, ``x_t = √ᾱ_t·a + √(1−ᾱ_t)·ε``
    the replay action noised at ``t ~ U{0..K−1}``: the denoiser's score
    ``−ε̂/√(1−ᾱ_t)`` is pushed along the critic's action gradient (the reference drops
    the ``1/√(1−ᾱ_t)``; ``M`` = ``q_grad_coeff`` absorbs the scale).

    Args:
        eps_pred: ``(B, N)`` the denoiser's ε̂ at ``x_t``.
        q_grad: ``(B, N)`` ``∇_a Q`` at ``x_t`` (no gradient).
        coeff: ``M``.
    """
    return (-eps_pred - coeff * q_grad.detach()).pow(2).mean()


class QGradTorchLearner(ReplayFinetuneLearnerMixin, TorchLearner):
    """Critic (``critic_lr``) then actor (``actor_lr``), each with its own Adam (the
    shared replay fine-tuning update); the host's ``actor_loss`` is DIPO's or QSM's."""

    OPTIMIZER_ORDER = (CRITIC, ACTOR)

    @override(ReplayFinetuneLearnerMixin)
    def update_targets(self, module_id) -> None:
        """Critic targets (and DIPO's target actor) ``θ' ← (1 − τ)·θ' + τ·θ``."""
        super().update_targets(module_id)
        module = self.module[module_id].unwrapped()
        if module.act_with_target:
            cfg = self.config.get_config_for_module(module_id)
            polyak_update_(module.actor_target, module.actor, cfg.tau)


def _chunks(module: Any, actions: Tensor) -> Tensor:
    pol = module.policy_config
    return actions.reshape(-1, pol.horizon, pol.action_dim)


class DIPOTorchLearner(QGradTorchLearner):
    """DIPO: denoising BC on the improved actions; :meth:`improve_actions` for the
    algorithm's write-back."""

    def actor_loss(self, module, config, obs, actions):
        """``L = mean ‖ε̂(√ᾱ_t·a* + √(1−ᾱ_t)·ε, t, s) − ε‖²`` on the improved ``a*``."""
        loss = denoising_loss(module.actor, module.schedule, _chunks(module, actions), obs)
        return loss, {}

    def improve_actions(self, obs: Any, actions: Any) -> Any:
        """:func:`improve_actions` with the current critic and the config's knobs, on
        numpy rows ``(B, Do)``, ``(B, N)``; returns numpy ``(B, N)``."""
        module = self.module[DEFAULT_MODULE_ID].unwrapped()
        cfg = self.config.get_config_for_module(DEFAULT_MODULE_ID)
        device = next(module.critic.parameters()).device
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=device)
        act_t = torch.as_tensor(actions, dtype=torch.float32, device=device)
        out = improve_actions(
            module.critic,
            obs_t,
            act_t.reshape(len(act_t), -1),
            lr=cfg.action_lr,
            steps=cfg.action_gradient_steps,
            max_grad_norm=cfg.action_grad_norm_per_dim * act_t[0].numel(),
        )
        return out.cpu().numpy()


class QSMTorchLearner(QGradTorchLearner):
    """QSM: the denoiser's ε̂ regressed onto ``−M·∇_a Q`` at noised replay actions."""

    def actor_loss(self, module, config, obs, actions):
        x0 = _chunks(module, actions)
        noise = torch.randn_like(x0)
        t = torch.randint(0, module.schedule.num_steps, (x0.shape[0],), device=x0.device)
        x_t = module.schedule.q_sample(x0, t, noise)
        grad = critic_action_gradient(module.critic, obs, x_t.flatten(1))
        eps_pred = module.actor(x_t, t, obs).flatten(1)
        loss = qsm_loss(eps_pred, grad, config.q_grad_coeff)
        return loss, {M.Q_GRAD_NORM: grad.norm(dim=1).mean()}
