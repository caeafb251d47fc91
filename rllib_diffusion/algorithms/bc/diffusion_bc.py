"""Diffusion behaviour cloning (DPPO's pretraining) as an RLlib offline algorithm.

Data flows through RLlib's offline API: parquet files of normalised
(observation window, action chunk) samples (see :mod:`rllib_diffusion.data.offline`)
are read by ``OfflineData`` with ray.data, reshaped by :class:`WindowPreLearner`, and
fed to the ``LearnerGroup``. Evaluation runs the EMA policy in the real env through
evaluation EnvRunners, wrapped by the action-chunk wrapper.
"""

from __future__ import annotations

from ray.rllib.algorithms.bc import BC, BCConfig
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.annotations import override

from rllib_diffusion.algorithms.denoiser_training import DenoiserTrainingConfigMixin
from rllib_diffusion.algorithms.offline_restore import OfflineRestoreMixin
from rllib_diffusion.algorithms.window_prelearner import (
    WindowPreLearner,
)


class DiffusionBCConfig(DenoiserTrainingConfigMixin, BCConfig):
    """Config of :class:`DiffusionBC`.

    Network and sampler knobs go in ``.rl_module(model_config=DiffusionPolicyConfig(...).to_dict())``;
    the dataset in ``.offline_data(input_=[parquet_dir])`` (use
    :func:`rllib_diffusion.algorithms.bc.diffusion_bc_config_for_dataset` to do both).
    Knobs: :class:`DenoiserTrainingConfigMixin`.
    """

    def __init__(self, algo_class=None) -> None:
        super().__init__(algo_class=algo_class or DiffusionBC)
        # DPPO's gym pretraining: AdamW, lr 1e-3 (cosine to 1e-4), EMA 0.995 every 10 steps.
        self.lr = 1e-3
        self.train_batch_size_per_learner = 256
        self.prelearner_class = WindowPreLearner

    @override(BCConfig)
    def get_default_rl_module_spec(self) -> RLModuleSpec:
        from rllib_diffusion.modules.diffusion_policy_module import DiffusionPolicyModule

        return RLModuleSpec(module_class=DiffusionPolicyModule)


class DiffusionBC(OfflineRestoreMixin, BC):
    """Diffusion BC: MARWIL/BC's offline training step with a denoising loss and EMA."""

    @classmethod
    @override(BC)
    def get_default_config(cls) -> DiffusionBCConfig:
        return DiffusionBCConfig()
