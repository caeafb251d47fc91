"""The frozen base policy as a deterministic map from initial noise to an action chunk.

Glossary: B batch, To*Do flattened normalised observation, Ta action horizon, Da action
dim, N = Ta*Da the flattened noise (DSRL's action).

DSRL (Wagenmaker et al., CoRL 2025) steers a pretrained diffusion/flow policy by choosing
the initial noise ``w`` of its sampler; the sampler must then be a function of ``w``.
Flow policies already are (Euler integration). Diffusion policies are decoded with DDIM
at η = 0, as the official code does for its DDPM-pretrained gym/robomimic policies
(``use_ddim: True``, ``ddim_steps: 5`` (gym) / ``8`` (robomimic), its ``DiffusionEval``
fixes ``ddim_eta = 0``): the same ε-network over fewer, leading timesteps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from ray.rllib.core.columns import Columns
from torch import Tensor, nn

from rllib_diffusion.checkpoints import CheckpointError, load_policy_module
from rllib_diffusion.envs.chunking import chunk_spaces
from rllib_diffusion.modules.diffusion_policy_module import DiffusionPolicyModule
from rllib_diffusion.modules.model_config import DiffusionPolicyConfig

#: ``meta.algorithm`` of the checkpoints DSRL steers.
BASE_ALGORITHM = "DiffusionBC"


def decoder_policy_config(
    policy: DiffusionPolicyConfig, ddim_steps: int | None
) -> DiffusionPolicyConfig:
    """The sampler config that decodes noise deterministically.

    Flow: unchanged (Euler over its own steps). DDPM/DDIM: DDIM with ``ddim_steps`` steps
    (None: the policy's own DDIM steps, or all K steps of a DDPM policy), sampled
    deterministically (η = 0).
    """
    if policy.sampler == "flow":
        return policy
    if ddim_steps is None:
        ddim_steps = policy.ddim_steps if policy.sampler == "ddim" else policy.denoising_steps
    return DiffusionPolicyConfig.from_dict(
        {**policy.to_dict(), "sampler": "ddim", "ddim_steps": int(ddim_steps)}
    )


def build_decoder(base: DiffusionPolicyModule, ddim_steps: int | None) -> DiffusionPolicyModule:
    """An inference-only copy of ``base``'s EMA network that samples with
    :func:`decoder_policy_config` (no gradients, eval mode)."""
    cfg = decoder_policy_config(base.policy_config, ddim_steps)
    obs_space, act_space = chunk_spaces(cfg.obs_dim, cfg.horizon, cfg.action_dim)
    decoder = DiffusionPolicyModule(
        observation_space=obs_space,
        action_space=act_space,
        inference_only=True,
        model_config=cfg.to_dict(),
    )
    decoder.ema_net.load_state_dict(base.ema_net.state_dict())
    decoder.requires_grad_(False)
    return decoder.eval()


def load_decoder(checkpoint: str | Path, ddim_steps: int | None) -> DiffusionPolicyModule:
    """:func:`build_decoder` of the DiffusionBC checkpoint ``checkpoint`` (on CPU)."""
    base, meta = load_policy_module(checkpoint, expect_algorithms=(BASE_ALGORITHM,))
    if not isinstance(base, DiffusionPolicyModule):
        raise CheckpointError(f"'{checkpoint}' does not hold a diffusion policy module.")
    return build_decoder(base, ddim_steps)


def decode_noise(decoder: DiffusionPolicyModule, obs: Tensor, noise: Tensor) -> Tensor:
    """The base policy's action chunk from initial noise.

    Args:
        obs: ``(B, To*Do)`` normalised observations.
        noise: ``(B, Ta, Da)`` or ``(B, N)`` initial noise ``w``.

    Returns:
        ``(B, Ta, Da)`` normalised action chunk in [-1, 1].
    """
    cfg = decoder.policy_config
    w = noise.reshape(noise.shape[0], cfg.horizon, cfg.action_dim).float()
    with torch.no_grad():
        return decoder.sample_actions(obs.float(), deterministic=True, x_init=w)


class SteeredPolicy(nn.Module):
    """A trained DSRL noise policy (RLlib's SAC module) followed by the frozen decoder:
    acts like any chunk policy (``forward_inference``/``forward_exploration`` return
    ``Columns.ACTIONS`` ``(B, Ta, Da)``), so evaluation treats it like the others.

    Args:
        noise_module: SAC RLModule over the noise, actions in [-1, 1]^N (tanh-squashed).
        decoder: :func:`build_decoder` of the base policy.
        noise_bound: the noise is ``noise_bound`` × the SAC action.
    """

    def __init__(self, noise_module: Any, decoder: DiffusionPolicyModule, noise_bound: float):
        super().__init__()
        self.noise_module = noise_module
        self.decoder = decoder
        self.noise_bound = float(noise_bound)

    def _act(self, obs: Tensor, *, deterministic: bool) -> dict[str, Tensor]:
        from rllib_diffusion.evaluation import policy_actions

        squashed = policy_actions(self.noise_module, obs, deterministic=deterministic)
        return {Columns.ACTIONS: decode_noise(self.decoder, obs, self.noise_bound * squashed)}

    def forward_inference(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return self._act(batch[Columns.OBS], deterministic=True)

    def forward_exploration(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return self._act(batch[Columns.OBS], deterministic=False)


class ZeroNoisePolicy(nn.Module):
    """The base policy decoded from ``w = 0`` (what a DSRL actor whose mean is 0 plays
    deterministically): the reference a deterministic DSRL evaluation is compared with,
    next to the base policy's own ``w ~ N(0, I)``."""

    def __init__(self, decoder: DiffusionPolicyModule):
        super().__init__()
        self.decoder = decoder

    def forward_inference(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        obs = batch[Columns.OBS]
        cfg = self.decoder.policy_config
        w = torch.zeros(obs.shape[0], cfg.horizon, cfg.action_dim, device=obs.device)
        return {Columns.ACTIONS: decode_noise(self.decoder, obs, w)}

    forward_exploration = forward_inference
