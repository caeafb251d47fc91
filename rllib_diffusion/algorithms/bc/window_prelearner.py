"""Old home of the window pre-learner (now :mod:`rllib_diffusion.algorithms.window_prelearner`,
shared by the offline families); kept so that checkpoints whose pickled config names this
path load."""

from rllib_diffusion.algorithms.window_prelearner import WindowPreLearner

__all__ = ["WindowPreLearner"]
