"""SynthER (Lu et al. 2023) generator training as an RLlib offline algorithm.

Data flows as for the offline Q-learners: transition parquet (raw units,
:func:`rllib_diffusion.data.offline.prepare_transition_data`) read by ``OfflineData``,
mapped by :class:`TransitionPreLearner`; :class:`SynthERModule` flattens and
standardises each batch and regresses the noise; the learner is diffusion BC's
(:class:`DiffusionBCTorchLearner`: AdamW, per-step learning rate and EMA).
"""

from __future__ import annotations

from ray.rllib.algorithms.bc import BC, BCConfig
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.annotations import override

from rllib_diffusion.algorithms.denoiser_training import DenoiserTrainingConfigMixin
from rllib_diffusion.algorithms.offline_restore import OfflineRestoreMixin
from rllib_diffusion.algorithms.transition_prelearner import TransitionPreLearner

#: ``CheckpointMeta.algorithm`` of generator checkpoints.
ALGORITHM_NAME = "SynthER"


class SynthERConfig(DenoiserTrainingConfigMixin, BCConfig):
    """Config of :class:`SynthER`. Network and data statistics go in
    ``.rl_module(model_config=SynthERModelConfig(...).to_dict())``; the transitions in
    ``.offline_data(input_=[parquet_dir])``. Knobs: :class:`DenoiserTrainingConfigMixin`
    (weight decay, EMA schedule); SynthER trains with Adam at lr 3e-4, batch 256."""

    def __init__(self, algo_class=None) -> None:
        super().__init__(algo_class=algo_class or SynthER)
        self.lr = 3e-4
        self.weight_decay = 0.0
        self.train_batch_size_per_learner = 256
        self.prelearner_class = TransitionPreLearner

    @override(BCConfig)
    def get_default_rl_module_spec(self) -> RLModuleSpec:
        from rllib_diffusion.algorithms.synther.synther_rl_module import SynthERModule

        return RLModuleSpec(module_class=SynthERModule)


class SynthER(OfflineRestoreMixin, BC):
    """SynthER generator training: BC's offline training step with a denoising loss."""

    @classmethod
    @override(BC)
    def get_default_config(cls) -> SynthERConfig:
        return SynthERConfig()
