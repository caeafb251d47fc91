"""DPOER learner: DPPO's chain-PPO learner plus the seed's learned temperature α.

Per minibatch: every ``entropy_interval``-th minibatch re-estimates the entropy ``Ĥ`` of
one denoising step sampled from the minibatch's ``x_k`` (``dpoer_losses.gmm_entropy`` or
the closed form); DPPO's loss gets ``s·α·log π`` in its unclipped branch
(``_unclipped_term``); when the minibatch's update is applied (not after the approx-KL
stop) α takes one Adam step on ``−log α·(H_target − Ĥ)``, also during the critic warm-up
(as the seed). α, its optimizer, the last estimate and the minibatch count are learner
state, checkpointed with it, so a resumed run continues them exactly; the estimate's
noise comes from a generator seeded by (config seed, minibatch count).
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.utils.annotations import override

from rllib_diffusion import metrics as M
from rllib_diffusion.algorithms.dppo.dpoer_losses import (
    ALPHA_FLOOR,
    entropy_surrogate_term,
    gaussian_entropy,
    gmm_entropy,
    sample_step,
    temperature_loss,
)
from rllib_diffusion.algorithms.dppo.dppo_connectors import DENOISE_K, X_PREV
from rllib_diffusion.algorithms.dppo.dppo_learner import DPPOTorchLearner

#: Learner-state key of DPOER's temperature (α, its Adam state, the entropy estimate).
DPOER_LEARNER_STATE = "dpoer"


class DPOERTorchLearner(DPPOTorchLearner):
    @override(DPPOTorchLearner)
    def build(self) -> None:
        super().build()
        self._alpha: dict[str, torch.nn.Parameter] = {}
        self._alpha_optim: dict[str, torch.optim.Adam] = {}
        # The seed's estimate is 0.0 until first computed (it is, at minibatch 0).
        self._entropy_estimate: dict[str, float] = {}
        self._minibatches = 0
        for mid in self.module.keys():
            alpha = torch.nn.Parameter(torch.tensor(float(self.config.initial_alpha)))
            self._alpha[mid] = alpha
            self._alpha_optim[mid] = torch.optim.Adam([alpha], lr=self.config.alpha_lr)
            self._entropy_estimate[mid] = 0.0

    def target_entropy(self, module_id) -> float:
        """``target_entropy_per_dim × horizon × action_dim`` (seed: −Ta·Da)."""
        pol = self.module[module_id].unwrapped().policy_config
        return self.config.target_entropy_per_dim * pol.horizon * pol.action_dim

    def estimate_entropy(self, module_id, batch: dict[str, Any]) -> float:
        """Mean entropy estimate over the minibatch's rows of one denoising step drawn from
        ``x_k`` with the exploration std (the seed's ``sac_get_logprobs_subsample``)."""
        module = self.module[module_id].unwrapped()
        obs, x_prev, k = batch[Columns.OBS], batch[X_PREV], batch[DENOISE_K].long()
        if Columns.LOSS_MASK in batch:
            keep = batch[Columns.LOSS_MASK].bool()
            obs, x_prev, k = obs[keep], x_prev[keep], k[keep]
        seed = (int(self.config.seed or 0) * 1_000_003 + self._minibatches) % (2**63)
        with torch.no_grad():
            mean, _ = module.step_mean_std(obs, x_prev, k)
            std = module.exploration_std(obs, k).reshape(-1, *([1] * (mean.dim() - 1)))
            std = std.expand_as(mean)
            if self.config.entropy_estimator == "gaussian":
                return float(gaussian_entropy(std).mean())
            x = sample_step(mean, std, torch.Generator().manual_seed(seed))
            return float(gmm_entropy(x).mean())

    @override(DPPOTorchLearner)
    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out) -> torch.Tensor:
        if self._minibatches % config.entropy_interval == 0:
            self._entropy_estimate[module_id] = self.estimate_entropy(module_id, batch)
        self._minibatches += 1
        total = super().compute_loss_for_module(
            module_id=module_id, config=config, batch=batch, fwd_out=fwd_out
        )
        metrics = {
            M.DPOER_ALPHA: float(self._alpha[module_id].detach()),
            M.DPOER_ENTROPY_ESTIMATE: self._entropy_estimate[module_id],
            M.DPOER_TARGET_ENTROPY: self.target_entropy(module_id),
            M.DPOER_MINIBATCHES: self._minibatches,
        }
        self.metrics.log_dict(metrics, key=module_id, window=1)
        return total

    @override(DPPOTorchLearner)
    def _unclipped_term(self, module_id, new_logp: torch.Tensor) -> torch.Tensor | float:
        scale = self.config.entropy_loss_scale
        if scale == 0:
            return 0.0
        return entropy_surrogate_term(self._alpha[module_id], new_logp, scale)

    @override(DPPOTorchLearner)
    def apply_gradients(self, gradients_dict) -> None:
        if not self._kl_stopped:
            for mid in self._alpha:
                self._step_alpha(mid)
        super().apply_gradients(gradients_dict)

    def _step_alpha(self, module_id) -> None:
        """One Adam step of α on the temperature loss with the current estimate."""
        alpha, optim = self._alpha[module_id], self._alpha_optim[module_id]
        optim.zero_grad()
        temperature_loss(
            alpha, self._entropy_estimate[module_id], self.target_entropy(module_id)
        ).backward()
        optim.step()
        with torch.no_grad():
            alpha.clamp_(min=ALPHA_FLOOR)

    @override(DPPOTorchLearner)
    def get_state(self, components=None, *, not_components=None, **kwargs) -> dict[str, Any]:
        state = super().get_state(components, not_components=not_components, **kwargs)
        state[DPOER_LEARNER_STATE] = {
            "minibatches": self._minibatches,
            "modules": {
                mid: {
                    "alpha": float(alpha.detach()),
                    "entropy_estimate": self._entropy_estimate[mid],
                    "optimizer": _plain(self._alpha_optim[mid].state_dict()),
                }
                for mid, alpha in self._alpha.items()
            },
        }
        return state

    @override(DPPOTorchLearner)
    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        own = state.get(DPOER_LEARNER_STATE)
        if own is None:
            return
        self._minibatches = int(own["minibatches"])
        for mid, saved in own["modules"].items():
            if mid not in self._alpha:
                continue
            with torch.no_grad():
                self._alpha[mid].fill_(float(saved["alpha"]))
            self._entropy_estimate[mid] = float(saved["entropy_estimate"])
            self._alpha_optim[mid].load_state_dict(_tensors(saved["optimizer"]))


def _plain(optimizer_state: dict[str, Any]) -> dict[str, Any]:
    """An Adam ``state_dict`` of one scalar parameter with its tensors as floats."""
    state = {
        key: {name: float(v) if torch.is_tensor(v) else v for name, v in slot.items()}
        for key, slot in optimizer_state["state"].items()
    }
    return {"state": state, "param_groups": optimizer_state["param_groups"]}


def _tensors(saved: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`_plain` (Adam keeps ``step`` as a float tensor too)."""
    state = {
        int(key): {name: torch.tensor(v) if isinstance(v, float) else v for name, v in slot.items()}
        for key, slot in saved["state"].items()
    }
    return {"state": state, "param_groups": saved["param_groups"]}
