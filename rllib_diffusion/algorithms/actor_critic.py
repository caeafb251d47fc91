"""Building blocks shared by the offline actor-critic learners (Diffusion-QL, IDQL, DAC, FQL).

Glossary: B batch, H critic heads.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from ray.rllib.core.columns import Columns

from rllib_diffusion.diffusion import ema_step_
from rllib_diffusion.modules.critics import polyak_update_
from rllib_diffusion.utils.optim import adam, set_lr

#: Optimizer names.
ACTOR, CRITIC = "actor", "critic"


def transition_batch(batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(obs (B, Do), actions (B, Da))`` as float tensors."""
    obs = batch[Columns.OBS].float()
    return obs, batch[Columns.ACTIONS].float().reshape(obs.shape[0], -1)


def td_target(batch: dict[str, Any], next_value: torch.Tensor, gamma: float) -> torch.Tensor:
    """``r + γ(1 − terminated)·next_value``; ``(B,)``. Truncated ends bootstrap."""
    done = batch[Columns.TERMINATEDS].float()
    return batch[Columns.REWARDS].float() + gamma * (1.0 - done) * next_value


def ensemble_mse(q: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``Σ_h MSE(Q_h, y)`` for ``q`` (H, B) and targets ``y`` (B,)."""
    return ((q - y.unsqueeze(0)) ** 2).mean(dim=1).sum()


#: Gradient steps between two measurements of Q on the acting policy's actions, and the
#: states (the batch's first ones) they use: acting samples many candidates per state.
POLICY_Q_INTERVAL, POLICY_Q_STATES = 100, 32


def acting_policy_q(module: Any, obs: torch.Tensor) -> torch.Tensor | None:
    """Mean over heads and states of ``Q(s, π(s))`` for the module's deterministic acting
    policy (``select_actions``: candidates picked by Q), on the first ``POLICY_Q_STATES``
    states, at every ``POLICY_Q_INTERVAL``-th gradient step (None at the others). Learners
    whose losses sample no policy action (IDQL, DAC) log it as ``q_policy_mean``; torch's
    RNG stream of the training is left as it was."""
    if int(module.train_step) % POLICY_Q_INTERVAL:
        return None
    states = obs[:POLICY_Q_STATES]
    devices = [states.device.index or 0] if states.is_cuda else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        actions = module.select_actions(states, explore=False)
        return module.critic(states, actions).mean()


def register_adam_optimizers(learner, module_id, nets_and_lrs, options=None) -> None:
    """One Adam optimizer (fused kernel, :func:`~rllib_diffusion.utils.optim.adam`) per
    ``(name, net, lr)``; ``options`` maps a name to that optimizer's ``adam`` keywords
    (e.g. ``{"decoupled": True, "weight_decay": 1e-4}``: AdamW)."""
    for name, net, lr in nets_and_lrs:
        params = learner.get_parameters(net)
        learner.register_optimizer(
            module_id=module_id,
            optimizer_name=name,
            optimizer=adam(params, **(options or {}).get(name, {})),
            params=params,
            lr_or_lr_schedule=lr,
        )


def cosine_lr(lr0: float, step: int, decay_steps: int) -> float:
    """``lr0·½(1 + cos(π·min(step, K)/K))``: optax's ``cosine_decay_schedule(lr0, K)``."""
    frac = min(step, decay_steps) / decay_steps
    return lr0 * 0.5 * (1.0 + math.cos(math.pi * frac))


class CosineLRMixin:
    """Cosine decay to 0 of chosen optimizers' float rates, set before every gradient
    step from the module's ``train_step`` (as optax's schedules count updates), so
    RLlib's scheduler is not registered for them. Put it first among the learner's
    bases; ``configure_optimizers_for_module`` passes each rate through
    :meth:`cosine_or_lr`, then calls :meth:`set_cosine_lrs`."""

    def build(self) -> None:
        # Before super().build(), which configures the optimizers.
        self._cosine_lrs: dict[tuple[Any, str], tuple[float, int]] = {}
        super().build()

    def cosine_or_lr(self, module_id, name: str, lr: Any, decay_steps: int | None) -> Any:
        """None (the learner decays it) for a float ``lr`` with ``decay_steps``; else
        ``lr`` for RLlib (a constant or an RLlib schedule)."""
        if decay_steps is None or not isinstance(lr, (int, float)):
            return lr
        self._cosine_lrs[(module_id, name)] = (float(lr), int(decay_steps))
        return None

    def set_cosine_lrs(self, module_id) -> None:
        step = int(self.module[module_id].unwrapped().train_step)
        for (mid, name), (lr0, decay) in self._cosine_lrs.items():
            if mid == module_id:
                set_lr(self.get_optimizer(module_id, name), cosine_lr(lr0, step, decay))

    def apply_gradients(self, gradients_dict) -> None:
        """Cosine-decayed rates for this step, then the step (and the target updates)."""
        for module_id in self.module.keys():
            self.set_cosine_lrs(module_id)
        super().apply_gradients(gradients_dict)


class SeparateLossesMixin:
    """One backward per optimizer, in the order of ``OPTIMIZER_ORDER``.

    ``compute_loss_for_module`` stores each optimizer's loss in
    ``self._temp_losses[(module_id, name)]``. A loss that reaches another optimizer's
    parameters (the actor's Q term reaches the critic) must come first: the next
    optimizer's ``zero_grad`` drops those contributions before its own backward. An
    optimizer without a stored loss takes no step (TD3's delayed actor): its gradients
    are cleared, so Adam skips its parameters.
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
                loss = self._temp_losses.pop((module_id, name), None)
                if loss is None:  # no loss for this optimizer this step: it takes no step
                    continue
                loss.backward(retain_graph=name != last)
                params = self.filter_param_dict_for_optimizer(self._params, optim)
                grads.update(
                    {pid: p.grad.clone() for pid, p in params.items() if p.grad is not None}
                )
        self._temp_losses.clear()
        return grads

    def compute_losses(self, *, fwd_out, batch):
        """Rewards become ``reward_scale · r + reward_bias`` before any loss sees them."""
        for module_id, module_batch in batch.items():
            cfg = self.config.get_config_for_module(module_id)
            scale, bias = getattr(cfg, "reward_scale", 1.0), getattr(cfg, "reward_bias", 0.0)
            if (scale, bias) != (1.0, 0.0) and Columns.REWARDS in module_batch:
                module_batch[Columns.REWARDS] = scale * module_batch[Columns.REWARDS] + bias
        return super().compute_losses(fwd_out=fwd_out, batch=batch)

    def apply_gradients(self, gradients_dict) -> None:
        super().apply_gradients(gradients_dict)
        for module_id in self.module.keys():
            self.update_targets(module_id)

    def target_tau(self, cfg: Any) -> float:
        """Polyak rate of ``critic_target`` in this gradient step: ``cfg.tau``."""
        return cfg.tau

    def update_targets(self, module_id) -> None:
        """Polyak-update ``critic_target`` (τ) and step the EMA actor schedule (if any)."""
        cfg = self.config.get_config_for_module(module_id)
        module = self.module[module_id].unwrapped()
        module.train_step += 1
        polyak_update_(module.critic_target, module.critic, self.target_tau(cfg))
        if not hasattr(module, "ema_actor"):
            return
        ema_step_(
            module.ema_actor,
            module.actor,
            int(module.train_step),
            decay=cfg.ema_decay,
            start=cfg.ema_start,
            every=cfg.ema_update_every,
        )
