"""DSRL: steering a frozen diffusion/flow policy with SAC over its initial noise."""

from rllib_diffusion.algorithms.dsrl.dsrl import DSRL, DSRLConfig, DSRLModelConfig

__all__ = ["DSRL", "DSRLConfig", "DSRLModelConfig"]
