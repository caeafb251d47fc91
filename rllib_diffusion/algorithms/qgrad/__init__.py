"""DIPO and QSM: the DPPO paper's action-gradient baselines for fine-tuning a pretrained
diffusion policy online (critic's ∇_a Q: DIPO improves replay actions and clones them,
QSM matches the denoiser's score to it)."""

from rllib_diffusion.algorithms.qgrad.qgrad import DIPO, QSM, DIPOConfig, QSMConfig

__all__ = ["DIPO", "DIPOConfig", "QSM", "QSMConfig"]
