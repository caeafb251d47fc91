"""DSRL-NA's module: RLlib's SAC module plus a noise critic and the frozen decoder.

Glossary: B batch, N = Ta*Da flattened noise / env action chunk, Do obs dim.

DSRL-NA (the official ``DSRL`` class, its default ``algorithm: dsrl_na``) keeps SAC's
critics on **env actions** ``Q^A(s, a)`` (the replay holds the decoded chunks) and adds a
noise critic ``Q^W(s, w)`` distilled from them on fresh noise: ``w ~ N(0, I)``,
``0.5 · Σ_i (Q^W_i(s, w) − Q^A_i(s, decode(s, w)))²``. The actor maximises ``Q^W``; the
TD target's next action is ``decode(s', w')`` with ``w'`` from the actor. Both need the
base policy on the learner: ``decoder``, a frozen inference-only copy whose weights DSRL
loads after build (:func:`~rllib_diffusion.algorithms.dsrl.dsrl.load_decoder_into`).
With ``noise_aliased`` off this is RLlib's SAC module over the noise.

Critics (both variants) are the official ones, not RLlib 2.60's: SB3's
``ContinuousCritic``, one MLP on ``concat(obs, action)`` (hidden layers Linear →
LayerNorm → tanh) with a linear output (:class:`DSRLCatalog`). RLlib's SAC critic is a
multi-stream encoder (obs and action MLPs, tanh fusion layers without LayerNorm); on
Hopper its tanh fusion layers saturated as Q grew to hundreds, Q became a constant of
state and action, the actor's only gradient was the entropy term, its mean went to 0
and the deterministic policy to the base policy at ``w = 0`` (issue 17).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from ray.rllib.algorithms.sac.sac_catalog import SACCatalog
from ray.rllib.algorithms.sac.sac_learner import (
    ACTION_DIST_INPUTS_NEXT,
    QF_PREDS,
    QF_TWIN_PREDS,
)
from ray.rllib.algorithms.sac.torch.default_sac_torch_rl_module import DefaultSACTorchRLModule
from ray.rllib.core.columns import Columns
from ray.rllib.core.models.base import ENCODER_OUT
from ray.rllib.utils.annotations import override
from torch import Tensor, nn

from rllib_diffusion.algorithms.dsrl.decoder import decode_noise
from rllib_diffusion.envs.chunking import chunk_spaces
from rllib_diffusion.modules.apis import EvalWhenInferenceOnly
from rllib_diffusion.modules.diffusion_policy_module import DiffusionPolicyModule
from rllib_diffusion.modules.model_config import DiffusionPolicyConfig

#: ``model_config`` keys DSRL adds to SAC's: the decoder's ``DiffusionPolicyConfig`` dict,
#: the noise bound and whether the module is DSRL-NA's.
DECODER_POLICY = "dsrl_decoder_policy"
NOISE_BOUND = "dsrl_noise_bound"
NOISE_ALIASED = "dsrl_noise_aliased"


class ConcatQEncoder(nn.Module):
    """Q encoder of the official critic: ``mlp(concat(obs, action))`` ``(B, latent)``.

    Args:
        mlp: RLlib's MLP encoder over the ``Do + N`` concatenated input (reads ``OBS``).
    """

    def __init__(self, mlp: nn.Module) -> None:
        super().__init__()
        self.mlp = mlp

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        joint = torch.cat([batch[Columns.OBS], batch[Columns.ACTIONS]], dim=-1)
        return self.mlp({Columns.OBS: joint})


class DSRLCatalog(SACCatalog):
    """SAC's catalog with the official DSRL critic encoder (:class:`ConcatQEncoder`):
    the actor's encoder config (``fcnet_hiddens``, LayerNorm, tanh) over
    ``concat(obs, action)``; the Q head stays RLlib's linear ``latent → 1``."""

    @override(SACCatalog)
    def _build_qf_encoder_continuous(self, framework: str) -> nn.Module:
        # The documented override hook; `_encoder_config` is the pi encoder's config,
        # which the parent's hook reuses too.
        joint_dim = int(self.observation_space.shape[0]) + int(self.action_space.shape[0])
        config = dataclasses.replace(self._encoder_config, input_dims=[joint_dim])
        return ConcatQEncoder(config.build(framework=framework))


class DSRLTorchRLModule(EvalWhenInferenceOnly, DefaultSACTorchRLModule):
    """SAC's module with the official critics (:class:`DSRLCatalog`); with
    ``model_config[NOISE_ALIASED]`` also DSRL-NA's noise critic (``noise_qf_encoder``/
    ``noise_qf``, and twins) and frozen ``decoder`` (learner only)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("catalog_class") is None:
            kwargs["catalog_class"] = DSRLCatalog
        super().__init__(*args, **kwargs)

    @override(DefaultSACTorchRLModule)
    def setup(self) -> None:
        super().setup()
        self.noise_aliased = bool(self.model_config.get(NOISE_ALIASED, False))
        if not self.noise_aliased or self.inference_only:
            return
        self.noise_bound = float(self.model_config[NOISE_BOUND])
        self.noise_qf_encoder = self.catalog.build_qf_encoder(framework=self.framework)
        self.noise_qf = self.catalog.build_qf_head(framework=self.framework)
        if self.twin_q:
            self.noise_qf_twin_encoder = self.catalog.build_qf_encoder(framework=self.framework)
            self.noise_qf_twin = self.catalog.build_qf_head(framework=self.framework)
        cfg = DiffusionPolicyConfig.from_dict(self.model_config[DECODER_POLICY])
        obs_space, act_space = chunk_spaces(cfg.obs_dim, cfg.horizon, cfg.action_dim)
        self.decoder = DiffusionPolicyModule(
            observation_space=obs_space,
            action_space=act_space,
            inference_only=True,
            model_config=cfg.to_dict(),
        ).requires_grad_(False)

    @override(DefaultSACTorchRLModule)
    def get_non_inference_attributes(self) -> list[str]:
        extra = []
        if self.noise_aliased:
            extra = ["noise_qf_encoder", "noise_qf", "decoder"]
            if self.twin_q:
                extra += ["noise_qf_twin_encoder", "noise_qf_twin"]
        return super().get_non_inference_attributes() + extra

    def noise_critic_parameters(self) -> list[torch.nn.Parameter]:
        nets = [self.noise_qf_encoder, self.noise_qf]
        if self.twin_q:
            nets += [self.noise_qf_twin_encoder, self.noise_qf_twin]
        return [p for net in nets for p in net.parameters()]

    # ------------------------------------------------------------------ helpers
    def _heads(self, obs: Tensor, actions: Tensor, *, noise: bool) -> list[Tensor]:
        """Q values ``(B,)`` of each critic head (env critics ``Q^A`` or noise ``Q^W``)."""
        prefix = "noise_qf" if noise else "qf"
        pairs = [(getattr(self, f"{prefix}_encoder"), getattr(self, prefix))]
        if self.twin_q:
            pairs.append((getattr(self, f"{prefix}_twin_encoder"), getattr(self, f"{prefix}_twin")))
        batch = {Columns.OBS: obs, Columns.ACTIONS: actions}
        return [self._qf_forward_train_helper(batch, enc, head) for enc, head in pairs]

    def decode(self, obs: Tensor, squashed: Tensor) -> Tensor:
        """The env action ``(B, N)`` for SAC's squashed noise action ``(B, N)``."""
        chunk = decode_noise(self.decoder, obs, self.noise_bound * squashed)
        return chunk.reshape(squashed.shape[0], -1)

    # ----------------------------------------------------------------- training
    @override(DefaultSACTorchRLModule)
    def _forward_train_continuous(self, batch: dict[str, Any]) -> dict[str, Any]:
        """SAC's outputs with DSRL-NA's meanings: ``QF_PREDS`` are ``Q^A`` of the batch's
        env actions, ``q_curr`` is ``min_i Q^W_i`` of the actor's resampled noise (noise
        critic frozen for this term), ``q_target_next`` the target ``Q^A`` of the decoded
        next noise (the distillation pairs come from :meth:`distillation_pairs`)."""
        if not self.noise_aliased:
            return super()._forward_train_continuous(batch)
        obs, next_obs = batch[Columns.OBS], batch[Columns.NEXT_OBS]
        out: dict[str, Any] = {}
        q_env = self._heads(obs, batch[Columns.ACTIONS], noise=False)
        out[QF_PREDS] = q_env[0]
        if self.twin_q:
            out[QF_TWIN_PREDS] = q_env[1]
        logits = self.pi(self.pi_encoder({Columns.OBS: obs})[ENCODER_OUT])
        logits_next = self.pi(self.pi_encoder({Columns.OBS: next_obs})[ENCODER_OUT])
        out[Columns.ACTION_DIST_INPUTS], out[ACTION_DIST_INPUTS_NEXT] = logits, logits_next
        dist_cls = self.get_train_action_dist_cls()
        noise_pi, out["logp_resampled"] = dist_cls.from_logits(logits).rsample_and_logp()
        noise_next, logp_next = dist_cls.from_logits(logits_next).sample_and_logp()
        out["logp_next_resampled"] = logp_next.detach()
        critic = self.noise_critic_parameters()
        for p in critic:  # straight-through: the actor term must not train Q^W
            p.requires_grad_(False)
        out["q_curr"] = torch.stack(self._heads(obs, noise_pi, noise=True)).min(dim=0).values
        for p in critic:
            p.requires_grad_(True)
        with torch.no_grad():
            env_next = self.decode(next_obs, noise_next.detach())
            out["q_target_next"] = self.forward_target(
                {Columns.OBS: next_obs, Columns.ACTIONS: env_next}
            )
        return out

    def distillation_pairs(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """``(Q^W_i(s, w / bound), Q^A_i(s, decode(s, w)))``, ``(heads, B)`` each, the
        second detached, on fresh ``w ~ N(0, I)`` (unclipped, as the official
        ``update_noise_critic``); the learner calls it on its distillation steps."""
        w = torch.randn(obs.shape[0], self.action_space.shape[0], device=obs.device)
        with torch.no_grad():
            env_a = self.decode(obs, w / self.noise_bound)
            targets = torch.stack(self._heads(obs, env_a, noise=False))
        preds = torch.stack(self._heads(obs, w / self.noise_bound, noise=True))
        return preds, targets
