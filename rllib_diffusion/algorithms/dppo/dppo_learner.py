"""DPPO learner: PPO on (env step, denoising step) pairs of the fine-tuned denoising chain.

Loss (DPPO.md): per-minibatch advantage normalisation, denoising discount
``γ_den^(K_ft − k − 1)``, per-step clip coefficient, clipped surrogate, value loss
``0.5·(V − R)²·vf_coef``, no KL penalty and (DPPO) no entropy bonus (ReinFlow's
``−entropy_coeff·H``, when its module reports an entropy); approx-KL (k3) early stop (the
minibatch that crosses the target is applied, the remaining ones are not, as in the
reference); separate actor/critic optimisers; critic warm-up (the actor's optimiser does
not step).

A minibatch never holds more pairs than the iteration collected (as in the reference,
which takes the whole batch when ``batch_size`` exceeds it): RLlib's cyclic iterator
would otherwise repeat every pair in one oversized minibatch and cover all epochs with
a single gradient step. Health signals per iteration (``metrics.py``): the first
minibatch's ratio (1 up to float error when the stored log-probs are right), the last
minibatch's approx-KL and clip fractions (overall and per denoising step), the number of
actor steps, the mean actor gradient norm and the size of the whole iteration's actor
update.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import POLICY_LOSS_KEY, VF_LOSS_KEY
from ray.rllib.core.learner.training_data import TrainingData
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.utils.annotations import override
from ray.rllib.utils.torch_utils import explained_variance

from rllib_diffusion import metrics as M
from rllib_diffusion.algorithms.dppo.dppo_connectors import (
    DENOISE_K,
    OLD_LOGP,
    X_NEXT,
    X_PREV,
    ExpandDenoisingSteps,
    RunningRewardScaling,
)
from rllib_diffusion.modules.apis import DenoisingChainAPI

#: Learner-state key of DPPO's own counters (critic warm-up, reward-scaling statistics).
DPPO_LEARNER_STATE = "dppo"


def clip_schedule(k_ft: int, clip: float, clip_base: float) -> torch.Tensor:
    """Clip coefficient per fine-tuned step k = 0..K_ft−1 (exponential from base to clip).

    ``c_k = c_base + (c − c_base)·(exp(3k/(K_ft−1)) − 1)/(exp(3) − 1)``; with K_ft = 1 the
    single step gets ``c`` (the reference divides by zero there).
    """
    if k_ft == 1:
        return torch.tensor([clip])
    k = torch.arange(k_ft, dtype=torch.float64)
    frac = (torch.exp(3 * k / (k_ft - 1)) - 1) / (math.exp(3) - 1)
    return (clip_base + (clip - clip_base) * frac).float()


class DPPOTorchLearner(PPOTorchLearner):
    @override(PPOTorchLearner)
    def build(self) -> None:
        super().build()
        self._kl_stopped = self._kl_tripped = False
        self._health: dict[str, Any] = {}
        # Completed update() calls (= iterations); critic warm-up counts these.
        self._updates_done = 0
        if self._learner_connector is not None:
            if self.config.reward_scaling:
                # Before RLlib's AddOneTsToEpisodesAndTruncate (see the connector).
                self._learner_connector.prepend(RunningRewardScaling(gamma=self.config.gamma))
            self._learner_connector.append(ExpandDenoisingSteps(repeats=self.config.repeat_samples))

    @classmethod
    @override(PPOTorchLearner)
    def rl_module_required_apis(cls) -> list[type]:
        return [*super().rl_module_required_apis(), DenoisingChainAPI]

    @override(PPOTorchLearner)
    def configure_optimizers_for_module(self, module_id, config=None) -> None:
        module = self.module[module_id].unwrapped()
        for name, params, lr in (
            (
                "actor",
                module.actor_parameters(),
                config.resolved_actor_lr(module.policy_config.network),
            ),
            ("critic", self.get_parameters(module.critic), config.critic_lr),
        ):
            # An iteration-based schedule (ReinFlow's) sets the lr itself before each
            # update (``_apply_iteration_lrs``); else RLlib keeps the constant lr.
            scheduled = config.iteration_lr(name, 0) is not None
            self.register_optimizer(
                module_id=module_id,
                optimizer_name=name,
                optimizer=torch.optim.AdamW(
                    params, lr=lr, weight_decay=config.resolved_weight_decay(name)
                ),
                params=params,
                lr_or_lr_schedule=None if scheduled else lr,
            )

    @override(PPOTorchLearner)
    def _create_iterator_if_necessary(self, *, training_data, minibatch_size=None, **kwargs):
        # RLlib 2.60 builds the train batch (learner connector) here; cap the minibatch at
        # the number of (env step, denoising step) pairs it holds.
        if minibatch_size and not training_data.data_iterators:
            batch = self._make_batch_if_necessary(training_data=training_data)
            pairs = min((len(b) for b in batch.policy_batches.values()), default=0)
            minibatch_size = max(1, min(minibatch_size, pairs))
            training_data = TrainingData(batch=batch)
        return super()._create_iterator_if_necessary(
            training_data=training_data, minibatch_size=minibatch_size, **kwargs
        )

    def _actor_vector(self, module_id) -> torch.Tensor:
        params = self.module[module_id].unwrapped().actor_parameters()
        return torch.cat([p.detach().reshape(-1) for p in params])

    @override(PPOTorchLearner)
    def before_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        super().before_gradient_based_update(timesteps=timesteps)
        self._apply_iteration_lrs()
        self._kl_stopped = self._kl_tripped = False
        self._health = {
            mid: {"theta0": self._actor_vector(mid).clone(), "grad_norms": [], "steps": 0}
            for mid in self.module.keys()
        }

    def _apply_iteration_lrs(self) -> None:
        """Set each optimizer's lr to ``config.iteration_lr`` of this update (a no-op for
        DPPO, whose lrs are constant)."""
        for mid in self.module.keys():
            for name in ("actor", "critic"):
                lr = self.config.iteration_lr(name, self._updates_done)
                if lr is not None:
                    for group in self.get_optimizer(mid, name).param_groups:
                        group["lr"] = lr

    @override(PPOTorchLearner)
    def compute_gradients(self, loss_per_module, **kwargs):
        grads = super().compute_gradients(loss_per_module, **kwargs)
        for mid, health in self._health.items():
            params = self.module[mid].unwrapped().actor_parameters()
            sq = [p.grad.detach().pow(2).sum() for p in params if p.grad is not None]
            if sq:
                health["grad_norms"].append(float(torch.stack(sq).sum().sqrt()))
        return grads

    @override(PPOTorchLearner)
    def after_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        super().after_gradient_based_update(timesteps=timesteps)
        self._updates_done += 1
        for mid, health in self._health.items():
            theta0 = health["theta0"]
            moved = float((self._actor_vector(mid) - theta0).norm())
            norms = health["grad_norms"]
            metrics = {
                M.ACTOR_UPDATE_NORM: moved,
                M.ACTOR_UPDATE_RELATIVE: moved / max(float(theta0.norm()), 1e-12),
                M.ACTOR_STEPS: health["steps"],
                M.ACTOR_GRAD_NORM: sum(norms) / len(norms) if norms else 0.0,
            }
            for key in (M.RATIO_FIRST_MINIBATCH, M.RATIO_FIRST_MINIBATCH_MAX_DEV):
                if key in health:
                    metrics[key] = health[key]
            self.metrics.log_dict(metrics, key=mid, window=1)

    def _reward_scalers(self) -> list[RunningRewardScaling]:
        pipeline = self._learner_connector
        if pipeline is None:
            return []
        return [c for c in pipeline.connectors if isinstance(c, RunningRewardScaling)]

    @override(PPOTorchLearner)
    def get_state(self, components=None, *, not_components=None, **kwargs) -> dict[str, Any]:
        state = super().get_state(components, not_components=not_components, **kwargs)
        # Checkpointed with the learner so that a resumed run neither repeats the critic
        # warm-up nor restarts the reward-scaling statistics.
        state[DPPO_LEARNER_STATE] = {
            "updates_done": self._updates_done,
            "reward_scaling": [c.get_state() for c in self._reward_scalers()],
        }
        return state

    @override(PPOTorchLearner)
    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        own = state.get(DPPO_LEARNER_STATE)
        if own is not None:
            self._updates_done = int(own["updates_done"])
            for connector, saved in zip(self._reward_scalers(), own["reward_scaling"]):
                connector.set_state(saved)

    @override(PPOTorchLearner)
    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out) -> torch.Tensor:
        module = self.module[module_id].unwrapped()
        mask = batch[Columns.LOSS_MASK].bool() if Columns.LOSS_MASK in batch else None

        def mmean(x: torch.Tensor) -> torch.Tensor:
            return x[mask].mean() if mask is not None else x.mean()

        k = batch[DENOISE_K].long()
        k_ft = module.ratio_steps
        new_logp, entropy = module.pair_logp_entropy(
            batch[Columns.OBS], batch[X_PREV], batch[X_NEXT], k
        )
        log_ratio = new_logp - batch[OLD_LOGP]
        ratio = log_ratio.exp()

        adv = batch[Postprocessing.ADVANTAGES]
        valid = adv[mask] if mask is not None else adv
        adv = (adv - valid.mean()) / (valid.std() + 1e-8)
        adv = adv * config.gamma_denoising ** (k_ft - k - 1).float()
        clip = clip_schedule(k_ft, config.clip_param, config.clip_param_base).to(adv.device)[k]
        surrogate = torch.max(
            -adv * ratio + self._unclipped_term(module_id, new_logp),
            -adv * torch.clamp(ratio, 1 - clip, 1 + clip),
        )
        pg_loss = mmean(surrogate)
        actor_loss = pg_loss
        if config.entropy_coeff > 0 and entropy is not None:
            actor_loss = actor_loss - config.entropy_coeff * mmean(entropy)
        values = module.compute_values(batch)
        targets = batch[Postprocessing.VALUE_TARGETS]
        vf_loss = mmean(0.5 * (values - targets) ** 2)
        total = actor_loss + config.vf_loss_coeff * vf_loss
        bc_loss = None
        if config.bc_loss_coeff > 0:
            bc_loss = self._bc_regulariser(module, batch[Columns.OBS])
            total = total + config.bc_loss_coeff * bc_loss

        with torch.no_grad():
            self._record_first_ratio(module_id, ratio if mask is None else ratio[mask])
            approx_kl = mmean((ratio - 1) - log_ratio)
            clipped = ((ratio - 1).abs() > clip).float()
            if config.target_kl is not None and approx_kl.item() > config.target_kl:
                # As the reference: this minibatch's update is applied, then the
                # iteration's remaining minibatch updates are skipped.
                self._kl_tripped = True
            metrics = {
                POLICY_LOSS_KEY: pg_loss,
                VF_LOSS_KEY: vf_loss,
                M.APPROX_KL: approx_kl,
                M.CLIP_FRACTION: mmean(clipped),
                M.RATIO_MEAN: mmean(ratio),
                M.EXPLAINED_VARIANCE: explained_variance(targets, values),
                M.KL_STOPPED: float(self._kl_tripped),
                M.DENOISING_STD: module.exploration_std(batch[Columns.OBS], k).mean(),
            }
            if entropy is not None:
                metrics[M.ENTROPY] = mmean(entropy)
            if bc_loss is not None:
                metrics[M.BC_REGULARISER] = bc_loss
            for step in range(k_ft):
                sel = k == step if mask is None else (k == step) & mask
                if sel.any():
                    metrics[f"{M.CLIP_FRACTION_PER_STEP}{step}"] = clipped[sel].mean()
        self.metrics.log_dict(metrics, key=module_id, window=1)
        return total

    def _unclipped_term(self, module_id, new_logp: torch.Tensor) -> torch.Tensor | float:
        """Term added to the surrogate's unclipped branch ``−A·r`` per pair: 0 in DPPO
        (DPOER: its temperature-weighted log-prob, ``DPOERTorchLearner``)."""
        return 0.0

    def _record_first_ratio(self, module_id, ratio: torch.Tensor) -> None:
        """Keep the ratio of the iteration's first minibatch (valid rows): it is taken before
        any update, so it must be 1 up to float error if the stored log-probs are right."""
        health = self._health.get(module_id)
        if health is not None and M.RATIO_FIRST_MINIBATCH not in health:
            health[M.RATIO_FIRST_MINIBATCH] = float(ratio.mean())
            health[M.RATIO_FIRST_MINIBATCH_MAX_DEV] = float((ratio - 1).abs().max())

    @staticmethod
    def _bc_regulariser(module, obs: torch.Tensor) -> torch.Tensor:
        """−log-likelihood under the fine-tuned actor of chains from the frozen base actor."""
        with torch.no_grad():
            chain = module.sample(obs, deterministic=False, base_only=True)["chain"]
        k_ft = chain.shape[1] - 1
        n = obs.shape[0]
        k = torch.arange(k_ft, device=obs.device).repeat(n)
        logp = module.pair_logp(
            obs.repeat_interleave(k_ft, dim=0),
            chain[:, :-1].reshape(n * k_ft, *chain.shape[2:]),
            chain[:, 1:].reshape(n * k_ft, *chain.shape[2:]),
            k,
        )
        return -logp.mean()

    @override(PPOTorchLearner)
    def apply_gradients(self, gradients_dict) -> None:
        """Step the optimisers, except after the approx-KL stop; during the critic warm-up
        only the critic's (the actor's optimiser is not stepped at all, as in the
        reference: no BC-regulariser step, no weight decay)."""
        if self._kl_stopped:
            return
        actor_steps = self._updates_done >= self.config.critic_warmup_iterations
        if not actor_steps:
            gradients_dict = self._without_actor_gradients(gradients_dict)
        super().apply_gradients(gradients_dict)
        self._kl_stopped = self._kl_tripped
        for health in self._health.values():
            health["steps"] += int(actor_steps)

    def _without_actor_gradients(self, gradients_dict) -> dict:
        """``gradients_dict`` without the fine-tuned actors' parameters, whose ``.grad`` is
        cleared so that their optimiser skips them."""
        actor_refs = set()
        for mid in self.module.keys():
            for param in self.module[mid].unwrapped().actor_parameters():
                param.grad = None
                actor_refs.add(self.get_param_ref(param))
        return {ref: g for ref, g in gradients_dict.items() if ref not in actor_refs}
