"""DAC as an RLlib offline algorithm: its own config, module (with the dual variable η)
and learner; the data path, targets and online phase are the family's (``offline_q``)."""

from __future__ import annotations

from typing import Any, Literal

from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.algorithms.bc import BC, BCConfig
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.annotations import override

from rllib_diffusion.algorithms.offline_q.offline_q import (
    EMAActorConfigMixin,
    OfflineQConfigMixin,
    OfflineQMixin,
    dataset_kind,
    task_name,
)
from rllib_diffusion.knobs import set_provided

#: Per-task LCB coefficient ρ and BC threshold (OFFLINE.md).
TASK_DEFAULTS: dict[str, dict[str, float]] = {
    "hopper": {"lcb_rho": 1.5, "bc_threshold": 1.0},
    "walker2d": {"lcb_rho": 1.0, "bc_threshold": 1.0},
    "halfcheetah": {"lcb_rho": 0.0, "bc_threshold": 1.0},
}

#: BC thresholds of the official ``runs.sh`` (Fang-Lin93/DAC) that differ from the
#: per-task value: the medium-expert data of hopper (0.05) and halfcheetah (0.1).
KIND_BC_THRESHOLDS: dict[tuple[str, str], float] = {
    ("hopper", "medium-expert"): 0.05,
    ("halfcheetah", "medium-expert"): 0.1,
}

#: Allowed values of DAC's option knobs (checked in ``validate``).
CHOICES: dict[str, tuple[Any, ...]] = {
    "actor_loss_reduction": ("mean", "sum"),
    "critic_loss_reduction": ("mean", "sum"),
    "lcb_std_ddof": (0, 1),
    "eta_bc_loss": ("pre_update", "post_update"),
}


class DACConfig(EMAActorConfigMixin, OfflineQConfigMixin, BCConfig):
    """DAC knobs: η₀ and its dual ascent (``eta_lr``, ``bc_threshold``), ``lcb_rho``,
    target samples. Grad-norm clip 1 (the paper's).

    Defaults follow the official code (github.com/Fang-Lin93/DAC, ``agents/dac.py`` and
    ``main.py``): BC and guidance terms and the critic loss are means (over action dims
    and Q heads), the LCB std is the population std (ddof 0), η moves with the BC loss of
    the step's batch before the actor update, both learning rates decay by a cosine to 0
    over ``lr_decay_steps``, and locomotion rewards are scaled IQL's way
    (``main.py --reward_tune iql_locomotion``, its default).
    """

    ALGO_NAME = "dac"
    #: The official ``--reward_tune`` default is ``iql_locomotion``: r · 1000 / (max − min
    #: episode return), applied by the offline runner when ``normalize_rewards`` is None.
    NORMALIZES_LOCOMOTION_REWARDS = True

    def __init__(self, algo_class=None) -> None:
        super().__init__(algo_class=algo_class or DAC)
        self.eta = 1.0
        self.eta_lr = 0.001
        self.bc_threshold = 1.0
        self.lcb_rho = 1.0
        self.num_target_samples = 10
        self.grad_clip = 1.0
        self.actor_loss_reduction = "mean"
        self.critic_loss_reduction = "mean"
        self.lcb_std_ddof = 0
        self.eta_bc_loss = "pre_update"
        self.lr_decay_steps = 2_000_000

    @override(BCConfig)
    def training(
        self,
        *,
        eta: float | None = NotProvided,
        eta_lr: float | None = NotProvided,
        bc_threshold: float | None = NotProvided,
        lcb_rho: float | None = NotProvided,
        num_target_samples: int | None = NotProvided,
        actor_loss_reduction: Literal["mean", "sum"] | None = NotProvided,
        critic_loss_reduction: Literal["mean", "sum"] | None = NotProvided,
        lcb_std_ddof: Literal[0, 1] | None = NotProvided,
        eta_bc_loss: Literal["pre_update", "post_update"] | None = NotProvided,
        lr_decay_steps: int | None = NotProvided,
        **kwargs: Any,
    ) -> DACConfig:
        """Args:
        eta: η₀, the initial value of the dual variable η (the BC-loss weight).
        eta_lr: step size of the dual ascent of η (kept in [0.001, 100]).
        bc_threshold: η rises while the BC loss is above this, falls below it.
        lcb_rho: ρ of the lower confidence bound over critic heads.
        num_target_samples: next actions per state averaged in the critic target.
        actor_loss_reduction: "mean" over action dims of the BC and guidance terms (the
            official code's); "sum" (before: Da× larger terms, so bc_threshold was per
            action vector, not per element).
        critic_loss_reduction: "mean" of the squared TD errors over the Q heads (the
            official code's); "sum" over heads (before: H× larger critic gradients).
        lcb_std_ddof: ddof of the std over heads in the LCB target: 0, the population
            std (the official code's, jnp.std); 1 (before: ρ·sqrt(H/(H−1)) in effect).
        eta_bc_loss: BC loss of η's dual step: "pre_update", that of the step's actor
            loss (the official code's, which evaluates the pre-update actor); or
            "post_update", recomputed after the actor step in eval mode (one extra
            no-grad actor forward per step).
        lr_decay_steps: gradient steps of a cosine decay of actor_lr and critic_lr to 0
            in the offline phase (official: its run length, 2M); None: constant rates
            (before). Not applied to a schedule (--lr-end) nor online.
        **kwargs: the shared offline-Q and RLlib ``training()`` args.
        """
        super().training(**kwargs)
        set_provided(
            self,
            {
                "eta": eta,
                "eta_lr": eta_lr,
                "bc_threshold": bc_threshold,
                "lcb_rho": lcb_rho,
                "num_target_samples": num_target_samples,
                "actor_loss_reduction": actor_loss_reduction,
                "critic_loss_reduction": critic_loss_reduction,
                "lcb_std_ddof": lcb_std_ddof,
                "eta_bc_loss": eta_bc_loss,
                "lr_decay_steps": lr_decay_steps,
            },
        )
        return self

    @classmethod
    def task_defaults(cls, env_id: str | None) -> dict[str, Any]:
        """ρ and the BC threshold of the paper for ``env_id``'s task (else {})."""
        return dict(TASK_DEFAULTS.get(task_name(env_id), {}))

    @classmethod
    def dataset_defaults(cls, env_id: str | None, dataset: str | None) -> dict[str, Any]:
        """The per-task values, with the official medium-expert BC thresholds."""
        found = cls.task_defaults(env_id)
        threshold = KIND_BC_THRESHOLDS.get((task_name(env_id), dataset_kind(dataset) or ""))
        if threshold is not None:
            found["bc_threshold"] = threshold
        return found

    @classmethod
    def default_model_config(cls, obs_dim: int, action_dim: int, **overrides: Any):
        """DAC's networks: 10 critic heads; acting by the argmax of the mean over heads
        of 10 samples of the trained (not the EMA) actor, as the official
        ``sample_actions``. Sampling steps of the posterior variance β̃_t (the official
        ``ddpm_sampler`` uses β_t and notes both give similar results; on the toy
        mixed-data task β_t scored 5.26 vs β̃_t 7.14 at 1,000 steps, so β_t is the
        option ``sampler_variance="beta"``, see docs/algorithms.md)."""
        from rllib_diffusion.algorithms.dac.dac_rl_module import DACModelConfig

        defaults = dict(
            num_critics=10,
            num_candidates=10,
            action_selection="argmax",
            q_aggregation="mean",
            acting_actor="online",
        )
        return DACModelConfig(obs_dim=obs_dim, action_dim=action_dim, **{**defaults, **overrides})

    @override(BCConfig)
    def get_default_rl_module_spec(self) -> RLModuleSpec:
        from rllib_diffusion.algorithms.dac.dac_rl_module import DACModule

        return RLModuleSpec(module_class=DACModule)

    @override(AlgorithmConfig)
    def get_default_learner_class(self):
        from rllib_diffusion.algorithms.dac.dac_learner import DACTorchLearner

        return DACTorchLearner

    @override(BCConfig)
    def validate(self) -> None:
        super().validate()
        if not 0.001 <= self.eta <= 100:
            self._value_error(f"eta (η₀) must be in [0.001, 100], got {self.eta}.")
        if self.num_target_samples < 1:
            self._value_error(f"num_target_samples must be >= 1, got {self.num_target_samples}.")
        if self.lcb_rho < 0:
            self._value_error(f"lcb_rho must be >= 0, got {self.lcb_rho}.")
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                self._value_error(f"{name} must be one of {allowed}, got {getattr(self, name)!r}.")
        if self.lr_decay_steps is not None and self.lr_decay_steps < 1:
            self._value_error(f"lr_decay_steps must be >= 1 or None, got {self.lr_decay_steps}.")


class DAC(OfflineQMixin, BC):
    @classmethod
    @override(BC)
    def get_default_config(cls) -> DACConfig:
        return DACConfig()
