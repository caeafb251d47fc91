"""DyDiff (diffusion dynamics model + one-step ensemble) training as an RLlib offline
algorithm.

Data flows as for SynthER's generator: segment parquet (stacked transitions in raw
units, :func:`rllib_diffusion.data.segments.prepare_segment_data`) read by
``OfflineData`` and mapped by :class:`TransitionPreLearner`; :class:`DyDiffModule`
standardises each batch and returns the joint denoising and ensemble regression pair;
the learner is diffusion BC's (:class:`DiffusionBCTorchLearner`: AdamW, per-step
learning rate, EMA).
"""

from __future__ import annotations

from ray.rllib.algorithms.bc import BC, BCConfig
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.annotations import override

from rllib_diffusion.algorithms.denoiser_training import DenoiserTrainingConfigMixin
from rllib_diffusion.algorithms.offline_restore import OfflineRestoreMixin
from rllib_diffusion.algorithms.transition_prelearner import TransitionPreLearner

#: ``CheckpointMeta.algorithm`` of DyDiff model checkpoints.
ALGORITHM_NAME = "DyDiff"


class DyDiffConfig(DenoiserTrainingConfigMixin, BCConfig):
    """Config of :class:`DyDiff`. Networks and data statistics go in
    ``.rl_module(model_config=DyDiffModelConfig(...).to_dict())``; the segments in
    ``.offline_data(input_=[parquet_dir])``. Knobs: :class:`DenoiserTrainingConfigMixin`
    (weight decay, EMA schedule). Adam at lr 3e-4, batch 256, no weight decay."""

    def __init__(self, algo_class=None) -> None:
        super().__init__(algo_class=algo_class or DyDiff)
        self.lr = 3e-4
        self.weight_decay = 0.0
        self.train_batch_size_per_learner = 256
        self.prelearner_class = TransitionPreLearner

    @override(BCConfig)
    def get_default_rl_module_spec(self) -> RLModuleSpec:
        from rllib_diffusion.algorithms.dydiff.dydiff_rl_module import DyDiffModule

        return RLModuleSpec(module_class=DyDiffModule)


class DyDiff(OfflineRestoreMixin, BC):
    """DyDiff model training: BC's offline training step with the joint loss."""

    @classmethod
    @override(BC)
    def get_default_config(cls) -> DyDiffConfig:
        return DyDiffConfig()
