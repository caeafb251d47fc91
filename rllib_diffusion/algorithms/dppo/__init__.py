"""DPPO: fine-tuning pretrained diffusion policies with denoising-chain PPO."""

from rllib_diffusion.algorithms.dppo.dppo import DPPO, DPPOConfig
from rllib_diffusion.algorithms.dppo.finetune import (
    FinetuneSettings,
    dppo_config_from_pretrained,
    finetune,
)

__all__ = ["DPPO", "DPPOConfig", "FinetuneSettings", "dppo_config_from_pretrained", "finetune"]
