"""DAC: diffusion actor-critic by noise regression toward the soft Q-gradient."""

from rllib_diffusion.algorithms.dac.dac import DAC, DACConfig

__all__ = ["DAC", "DACConfig"]
