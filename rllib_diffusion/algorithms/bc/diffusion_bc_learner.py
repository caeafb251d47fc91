"""Old home of the diffusion BC learner (now :mod:`rllib_diffusion.algorithms.denoiser_training`,
shared with SynthER); kept so that checkpoints whose pickled config names this path load."""

from rllib_diffusion.algorithms.denoiser_training import DiffusionBCTorchLearner

__all__ = ["DiffusionBCTorchLearner"]
