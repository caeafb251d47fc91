"""DRWR and DAWR: the DPPO paper's reward- and advantage-weighted regression baselines
for fine-tuning a pretrained diffusion policy online."""

from rllib_diffusion.algorithms.awr.awr import DAWR, DRWR, DAWRConfig, DRWRConfig

__all__ = ["DAWR", "DAWRConfig", "DRWR", "DRWRConfig"]
