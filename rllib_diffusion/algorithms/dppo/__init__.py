"""DPPO and its sibling ReinFlow: fine-tuning pretrained diffusion/flow policies with
denoising-chain PPO."""

from rllib_diffusion.algorithms.dppo.dppo import DPPO, DPPOConfig
from rllib_diffusion.algorithms.dppo.finetune import (
    FinetuneSettings,
    dppo_config_from_pretrained,
    finetune,
)
from rllib_diffusion.algorithms.dppo.reinflow import ReinFlow, ReinFlowConfig

__all__ = [
    "DPPO",
    "DPPOConfig",
    "FinetuneSettings",
    "ReinFlow",
    "ReinFlowConfig",
    "dppo_config_from_pretrained",
    "finetune",
]
