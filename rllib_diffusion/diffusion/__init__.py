"""Pure-torch diffusion and flow-matching core (no ``ray`` import).

Shape glossary:
    B   batch size
    K   number of denoising steps (K_ft: the fine-tuned last ones)
    S   number of steps a chain or Euler integration takes
    Ta  action horizon (chunk length)
    Da  action dimension
    Dc  conditioning dimension

Modules: ``schedules`` (NoiseSchedule), ``sampling`` (DDPM/DDIM steps, chains),
``logprob`` (per-transition log-probs), ``posterior`` (chains ending at a given
sample, drawn from the forward posterior), ``losses`` (denoising loss), ``flow``
(flow matching, Euler sampler), ``ema`` (weight averaging), ``networks``.
"""

from rllib_diffusion.diffusion.ema import ema_schedule_decay, ema_step_, ema_update_
from rllib_diffusion.diffusion.flow import (
    FlowChain,
    StdFn,
    VelocityFn,
    VelocityNet,
    bounded_std,
    euler_sample,
    flow_chain_entropy,
    flow_chain_logprob,
    flow_matching_loss,
    flow_times,
    linear_path,
    noisy_euler_chain,
)
from rllib_diffusion.diffusion.logprob import chain_logprobs, gaussian_entropy, transition_logprob
from rllib_diffusion.diffusion.losses import EpsNet, denoising_loss, reduce_per_sample
from rllib_diffusion.diffusion.networks import (
    MLP,
    DiffusionMLP,
    SinusoidalPosEmb,
    TemporalUNet1D,
    TimeEmbedding,
    build_network,
    make_activation,
)
from rllib_diffusion.diffusion.posterior import posterior_chain, posterior_step_mean_std
from rllib_diffusion.diffusion.sampling import (
    ChainOutput,
    EpsFn,
    ddim_mean_std,
    ddim_timesteps,
    ddpm_mean_std,
    gaussian_step,
    reverse_step,
    reverse_step_std,
    reverse_timesteps,
    sample_chain,
)
from rllib_diffusion.diffusion.schedules import NoiseSchedule, cosine_betas, linear_betas, vp_betas

__all__ = [
    "MLP",
    "ChainOutput",
    "DiffusionMLP",
    "EpsFn",
    "EpsNet",
    "FlowChain",
    "NoiseSchedule",
    "SinusoidalPosEmb",
    "StdFn",
    "TemporalUNet1D",
    "TimeEmbedding",
    "VelocityFn",
    "VelocityNet",
    "bounded_std",
    "build_network",
    "chain_logprobs",
    "cosine_betas",
    "ddim_mean_std",
    "ddim_timesteps",
    "ddpm_mean_std",
    "denoising_loss",
    "ema_schedule_decay",
    "ema_step_",
    "ema_update_",
    "euler_sample",
    "flow_chain_entropy",
    "flow_chain_logprob",
    "flow_matching_loss",
    "flow_times",
    "gaussian_entropy",
    "gaussian_step",
    "reverse_step",
    "reverse_step_std",
    "reverse_timesteps",
    "linear_betas",
    "linear_path",
    "make_activation",
    "noisy_euler_chain",
    "posterior_chain",
    "posterior_step_mean_std",
    "reduce_per_sample",
    "sample_chain",
    "transition_logprob",
    "vp_betas",
]
