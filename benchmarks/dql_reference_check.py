"""Our online DQL update against the DPPO reference's (irom-lab/dppo ``DQLDiffusion`` and
the loop body of ``TrainDQLDiffusionAgent.run``) on the same weights, batch and torch RNG
seed; writes ``benchmarks/results/<name>.json``.

As ``dipo_reference_check.py`` (whose helpers it uses): the reference is imported
unmodified from a ``git archive`` of its mirror, both sides run our denoiser, our
critics hold the reference's ``CriticObsAct`` weights. Compared: the actor's loss
``L_bc(â) + η·L_q`` and its gradient (the twin order fixed on both sides: the reference
draws it with numpy, ours with torch), and one whole gradient step (critic AdamW step,
actor loss with the stepped critic, actor AdamW step, Polyak targets) against our
learner's with ``actor_after_critic_step`` True (the reference's order) and False (one
forward for both losses). Example::

    python benchmarks/dql_reference_check.py --name dql_reference_check
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dipo_reference_check import (  # noqa: E402
    DA,
    MIRROR,  # noqa: E402, F401 (the mirror the test checks)
    OBS_DIM,
    TA,
    CondAdapter,
    K,
    _copy_critics,
    _diff,
    _grad_diff,
    batch,
    dppo_reference,
    reference_check_main,
)

#: The reference's Hopper DQL knobs (``ft_dql_diffusion_mlp.yaml``).
ETA, ACTOR_LR, CRITIC_LR, TAU, GAMMA, REWARD_SCALE = 1.0, 1e-4, 1e-3, 0.005, 0.99, 0.01


def our_learner(hidden: tuple[int, ...], after_critic: bool) -> tuple[Any, Any]:
    """Our DQL learner (reference Hopper knobs, DDPM-20, random denoiser)."""
    from rllib_diffusion.algorithms.diffusion_ql.finetune import DQLConfig, DQLModelConfig
    from rllib_diffusion.envs.chunking import chunk_spaces
    from rllib_diffusion.modules.model_config import DiffusionPolicyConfig

    policy = DiffusionPolicyConfig(
        obs_dim=OBS_DIM, action_dim=DA, horizon=TA, act_steps=TA, denoising_steps=K,
        hidden_dims=hidden,
    )  # fmt: skip
    obs_space, act_space = chunk_spaces(OBS_DIM, TA, DA)
    config = (
        DQLConfig()
        .environment(observation_space=obs_space, action_space=act_space)
        .training(actor_after_critic_step=after_critic)
        .rl_module(model_config=DQLModelConfig(policy=policy.to_dict()).to_dict())
    )
    torch.manual_seed(0)
    learner = config.build_learner(spaces={"default_policy": (obs_space, act_space)})
    return learner, learner.module["default_policy"].unwrapped()


def reference_model(ours: Any) -> Any:
    """The reference's ``DQLDiffusion`` (Hopper config) on a copy of our denoiser; its
    critics' weights are copied into ours (``critic`` and ``critic_target``)."""
    from model.common.critic import CriticObsAct
    from model.diffusion.diffusion_dql import DQLDiffusion

    critic = CriticObsAct(
        cond_dim=OBS_DIM, mlp_dims=[256, 256, 256], action_dim=DA, action_steps=TA,
        activation_type="Mish", residual_style=True,
    )  # fmt: skip
    ref = DQLDiffusion(
        actor=CondAdapter(copy.deepcopy(ours.actor)), critic=critic, horizon_steps=TA,
        obs_dim=OBS_DIM, action_dim=DA, denoising_steps=K, device="cpu",
        min_sampling_denoising_std=0.1, randn_clip_value=3,
    )  # fmt: skip
    _copy_critics(ref, ours)
    return ref


def fixed_twin_order():
    """Both sides take ``L_q = −mean Q_1 / sg(mean |Q_2|)``: the reference's numpy draw
    ``uniform() > 0.5`` and our ``randperm`` are fixed (ours draws after the BC term, so
    the torch streams stay aligned)."""
    ref_draw = mock.patch("numpy.random.uniform", return_value=0.9)
    our_draw = mock.patch("torch.randperm", return_value=torch.tensor([0, 1]))
    return ref_draw, our_draw


def actor_loss_pieces(ours: Any, ref: Any, rows: dict[str, np.ndarray], seed: int) -> dict:
    """Max |ours − reference| of the actor's loss and its gradient on one batch."""
    from ray.rllib.core.columns import Columns

    from rllib_diffusion.algorithms.diffusion_ql.finetune_learner import dql_actor_loss

    obs = torch.as_tensor(rows[Columns.OBS])
    ref_draw, our_draw = fixed_twin_order()
    with our_draw:
        torch.manual_seed(seed)
        mine, bc, q_term = dql_actor_loss(
            ours, obs, torch.as_tensor(rows[Columns.ACTIONS]), eta=ETA, bc_actions="sampled"
        )
    with ref_draw:
        torch.manual_seed(seed)
        theirs = ref.loss_actor({"state": obs[:, None]}, ETA, TA)
    mine.backward()
    theirs.backward()
    return {
        "actor_loss": _diff(mine, theirs),
        "actor_loss_value": float(theirs.detach()),
        "actor_bc_value": float(bc.detach()),
        "actor_q_term_value": float(q_term.detach()),
        "actor_grad": _grad_diff(list(ours.actor.parameters()), list(ref.actor.net.parameters())),
    }


def reference_step(ref: Any, rows: dict[str, np.ndarray], seed: int) -> None:
    """The loop body of ``TrainDQLDiffusionAgent.run`` after warm-up, verbatim in order:
    critic AdamW step, actor loss with the stepped critic, actor AdamW step, Polyak."""
    from ray.rllib.core.columns import Columns

    t = {k: torch.as_tensor(v) for k, v in rows.items()}
    critic_opt = torch.optim.AdamW(ref.critic.parameters(), lr=CRITIC_LR, weight_decay=0)
    actor_opt = torch.optim.AdamW(ref.actor.parameters(), lr=ACTOR_LR, weight_decay=0)
    obs = {"state": t[Columns.OBS][:, None]}
    ref_draw, _ = fixed_twin_order()
    torch.manual_seed(seed)
    loss_critic = ref.loss_critic(
        obs, {"state": t[Columns.NEXT_OBS][:, None]}, t[Columns.ACTIONS].reshape(-1, TA, DA),
        REWARD_SCALE * t[Columns.REWARDS], t[Columns.TERMINATEDS].float(), GAMMA,
    )  # fmt: skip
    critic_opt.zero_grad()
    loss_critic.backward()
    critic_opt.step()
    actor_opt.zero_grad()
    with ref_draw:
        loss_actor = ref.loss_actor(obs, ETA, TA)
    loss_actor.backward()
    actor_opt.step()
    ref.update_target_critic(TAU)


def whole_step(hidden: tuple[int, ...], after_critic: bool, rows: dict, seed: int) -> dict:
    """Max |Δ| of every network after one gradient step of our learner
    (``actor_after_critic_step=after_critic``) and of the reference's loop body."""
    from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

    from rllib_diffusion.algorithms.replay_finetune import ACTOR_ACTIONS, ACTOR_OBS

    learner, module = our_learner(hidden, after_critic)
    ref = reference_model(module)
    from ray.rllib.core.columns import Columns

    full = rows | {ACTOR_OBS: rows[Columns.OBS], ACTOR_ACTIONS: rows[Columns.ACTIONS]}
    _, our_draw = fixed_twin_order()
    with our_draw:
        torch.manual_seed(seed)
        learner.update(
            batch=MultiAgentBatch({"default_policy": SampleBatch(full)}, len(rows[Columns.OBS]))
        )
    reference_step(ref, rows, seed)
    nets = {
        "actor": (module.actor, ref.actor.net),
        "critic": (module.critic, ref.critic),
        "critic_target": (module.critic_target, ref.critic_target),
    }
    tag = "after_critic" if after_critic else "one_forward"
    return {
        f"step_{tag}_{name}": max(_diff(a, b) for a, b in zip(x.parameters(), y.parameters()))
        for name, (x, y) in nets.items()
    }


def check(batch_size: int, seed: int, hidden: tuple[int, ...], mirror: Path) -> dict:
    """Every figure (max |ours − reference| unless named) and the reference's origin."""
    with dppo_reference(mirror) as (origin, stubs):
        _, ours = our_learner(hidden, True)
        ref = reference_model(ours)
        figures = actor_loss_pieces(ours, ref, batch(batch_size, seed), seed)
        rows = batch(batch_size, seed + 1)
        for after_critic in (True, False):
            figures |= whole_step(hidden, after_critic, rows, seed)
    return {"figures": figures, "reference": origin, "stubbed_imports": stubs}


def main(argv: list[str] | None = None) -> dict:
    return reference_check_main(
        argv, name="dql_reference_check", description=__doc__.split("\n\n")[0], check=check
    )


if __name__ == "__main__":
    main()
