"""Our DIPO update against the DPPO reference's (irom-lab/dppo ``DIPODiffusion`` and the
action-gradient loop of ``TrainDIPODiffusionAgent.run``), one piece at a time, on the
same weights, batch and torch RNG seed; writes ``benchmarks/results/<name>.json``.

The reference is imported unmodified from a ``git archive`` of its mirror (as
``performance.py``; ``einops`` stubbed where not installed). Both sides run our denoiser
(the reference's ``DiffusionModel`` calls it through a ``network(x, t, cond)`` adapter),
so what is compared is the DIPO code around it: the reverse chain (exploring and
deterministic), the twin critics' TD loss and its gradient, the action improvement and
its write-back, the actor's denoising loss and its gradient, and one whole gradient step
(critic AdamW step, action improvement, actor AdamW step, Polyak targets) against our
learner's. The critic is the reference's ``CriticObsAct`` with its Hopper config
(``residual_style: True``, which its ``residual_tyle`` argument never receives); our
critics get its weights. Example::

    python benchmarks/dipo_reference_check.py --name dipo_reference_check
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402
from performance_peers import export_reference, stubbed_imports  # noqa: E402

MIRROR = Path(os.environ.get("RLLIB_DIFFUSION_MIRRORS", "/work/.mirror")) / "irom-lab+dppo"
OBS_DIM, DA, TA, K = 11, 3, 4, 20


class CondAdapter(torch.nn.Module):
    """The reference's ``network(x, t, cond={"state": (B, To, Do)})`` on our denoiser."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x, time, cond):
        return self.net(x, time, cond["state"].flatten(1))


def our_module(hidden: tuple[int, ...]) -> Any:
    """Our DIPO module (reference Hopper shapes, DDPM-20) with a random denoiser."""
    from rllib_diffusion.algorithms.qgrad.qgrad_rl_module import DIPOModelConfig, QGradModule
    from rllib_diffusion.envs.chunking import chunk_spaces
    from rllib_diffusion.modules.model_config import DiffusionPolicyConfig

    policy = DiffusionPolicyConfig(
        obs_dim=OBS_DIM, action_dim=DA, horizon=TA, act_steps=TA, denoising_steps=K,
        hidden_dims=hidden,
    )  # fmt: skip
    obs_space, act_space = chunk_spaces(OBS_DIM, TA, DA)
    torch.manual_seed(0)
    return QGradModule(
        observation_space=obs_space,
        action_space=act_space,
        inference_only=False,
        model_config=DIPOModelConfig(policy=policy.to_dict()).to_dict(),
    )


def reference_model(ours: Any) -> Any:
    """The reference's ``DIPODiffusion`` (Hopper config) on our denoiser; its critics'
    weights are copied into ours (``critic`` and ``critic_target``)."""
    from model.common.critic import CriticObsAct
    from model.diffusion.diffusion_dipo import DIPODiffusion

    critic = CriticObsAct(
        cond_dim=OBS_DIM, mlp_dims=[256, 256, 256], action_dim=DA, action_steps=TA,
        activation_type="Mish", residual_style=True,
    )  # fmt: skip
    ref = DIPODiffusion(
        actor=CondAdapter(copy.deepcopy(ours.actor)), critic=critic, horizon_steps=TA,
        obs_dim=OBS_DIM, action_dim=DA, denoising_steps=K, device="cpu",
        min_sampling_denoising_std=0.1, randn_clip_value=3,
    )  # fmt: skip
    ref.actor_target.net.load_state_dict(ours.actor_target.state_dict())
    for ref_q, head, head_t in zip((ref.critic.Q1, ref.critic.Q2), *_heads(ours)):
        linears = [m.linear_1 for m in ref_q.moduleList]
        ours_linear = [layer.body[0] for layer in head.hidden] + [head.out]
        if len(linears) != len(ours_linear):
            raise SystemExit("critic shapes differ: our critic is not a plain MLP")
        for a, b in zip(ours_linear, linears):
            a.load_state_dict(b.state_dict())
        head_t.load_state_dict(head.state_dict())
    ref.critic_target.load_state_dict(ref.critic.state_dict())
    return ref


def _heads(ours: Any) -> tuple[list, list]:
    return list(ours.critic.heads), list(ours.critic_target.heads)


def reference_action_improvement(model, obs_b, actions_b, action_lr, steps, grad_norm):
    """Verbatim the action-gradient block of ``TrainDIPODiffusionAgent.run`` (its
    ``self.`` attributes as arguments); returns the guided actions ``(B, Ta, Da)``.
    ``actions_b`` is changed in place (the reference's is a fresh copy of its rows)."""
    actions_flat = actions_b.reshape(len(actions_b), -1)
    actions_optim = torch.optim.Adam([actions_flat], lr=action_lr, eps=1e-5)
    for _ in range(steps):
        actions_flat.requires_grad_(True)
        q_values_1, q_values_2 = model.critic({"state": obs_b}, actions_flat)
        q_values = torch.min(q_values_1, q_values_2)
        action_opt_loss = -q_values.sum()

        actions_optim.zero_grad()
        action_opt_loss.backward(torch.ones_like(action_opt_loss))
        torch.nn.utils.clip_grad_norm_([actions_flat], max_norm=grad_norm, norm_type=2)
        actions_optim.step()

        actions_flat.requires_grad_(False)
        actions_flat.clamp_(-1.0, 1.0)
    return actions_flat.reshape(len(actions_flat), TA, DA)


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach() - b.detach()).abs().max())


def _grad_diff(ours: list, theirs: list) -> float:
    return max(_diff(a.grad, b.grad) for a, b in zip(ours, theirs))


def our_learner(hidden: tuple[int, ...], ref: Any) -> tuple[Any, Any]:
    """Our DIPO learner (reference Hopper knobs) whose module holds ``ref``'s critics and
    the same denoiser weights as :func:`our_module`."""
    from rllib_diffusion.algorithms.qgrad.qgrad import DIPOConfig
    from rllib_diffusion.algorithms.qgrad.qgrad_rl_module import DIPOModelConfig
    from rllib_diffusion.envs.chunking import chunk_spaces

    template = our_module(hidden)
    obs_space, act_space = chunk_spaces(OBS_DIM, TA, DA)
    config = (
        DIPOConfig()
        .environment(observation_space=obs_space, action_space=act_space)
        .rl_module(model_config=DIPOModelConfig(policy=template.finetune_config.policy).to_dict())
    )
    learner = config.build_learner(spaces={"default_policy": (obs_space, act_space)})
    module = learner.module["default_policy"].unwrapped()
    module.load_state_dict(template.state_dict())
    _copy_critics(ref, module)
    return learner, module


def _copy_critics(ref: Any, module: Any) -> None:
    for ref_q, ref_qt, head, head_t in zip(
        (ref.critic.Q1, ref.critic.Q2),
        (ref.critic_target.Q1, ref.critic_target.Q2),
        *_heads(module),
    ):
        for src, dst in ((ref_q, head), (ref_qt, head_t)):
            linears = [m.linear_1 for m in src.moduleList]
            for a, b in zip([layer.body[0] for layer in dst.hidden] + [dst.out], linears):
                a.load_state_dict(b.state_dict())


def batch(n: int, seed: int) -> dict[str, np.ndarray]:
    """Replay-like rows: normalised obs, actions in [-1, 1], raw Hopper-sized rewards."""
    from ray.rllib.core.columns import Columns

    rng = np.random.default_rng(seed)
    return {
        Columns.OBS: rng.uniform(-1, 1, (n, OBS_DIM)).astype(np.float32),
        Columns.ACTIONS: rng.uniform(-1, 1, (n, TA * DA)).astype(np.float32),
        Columns.REWARDS: rng.uniform(0, 12, n).astype(np.float32),
        Columns.NEXT_OBS: rng.uniform(-1, 1, (n, OBS_DIM)).astype(np.float32),
        Columns.TERMINATEDS: rng.uniform(size=n) < 0.05,
    }


def pieces(ours: Any, ref: Any, rows: dict[str, np.ndarray], seed: int) -> dict[str, float]:
    """Max |ours − reference| of each piece on one batch."""
    from ray.rllib.core.columns import Columns

    from rllib_diffusion.algorithms.qgrad.qgrad_learner import DIPOTorchLearner, improve_actions
    from rllib_diffusion.algorithms.replay_finetune_learner import twin_critic_step

    t = {k: torch.as_tensor(v) for k, v in rows.items()}
    obs, cond = t[Columns.OBS], {"state": t[Columns.OBS][:, None]}
    out = {}
    for det in (False, True):
        torch.manual_seed(seed)
        a = ours.sample(obs, deterministic=det)
        torch.manual_seed(seed)
        b = ref(cond, deterministic=det)
        out[f"chain_{'deterministic' if det else 'exploring'}"] = _diff(a, b)
    scaled = dict(t) | {Columns.REWARDS: 0.01 * t[Columns.REWARDS]}
    torch.manual_seed(seed)
    loss, _ = twin_critic_step(ours, scaled, 0.99)
    torch.manual_seed(seed)
    ref_loss = ref.loss_critic(
        cond, {"state": t[Columns.NEXT_OBS][:, None]}, t[Columns.ACTIONS].reshape(-1, TA, DA),
        scaled[Columns.REWARDS], t[Columns.TERMINATEDS].float(), 0.99,
    )  # fmt: skip
    loss.backward()
    ref_loss.backward()
    out["critic_loss"] = _diff(loss, ref_loss)
    out["critic_loss_value"] = float(ref_loss.detach())
    out["critic_grad"] = _grad_diff(list(ours.critic.parameters()), list(ref.critic.parameters()))
    acts = t[Columns.ACTIONS]
    mine = improve_actions(ours.critic, obs, acts, lr=1e-4, steps=10, max_grad_norm=0.1 * TA * DA)
    theirs = reference_action_improvement(
        ref, cond["state"], acts.clone().reshape(-1, TA, DA), 1e-4, 10, 0.1 * TA * DA
    )
    out["improved_actions"] = _diff(mine, theirs.reshape(len(acts), -1))
    out["action_shift_mean"] = float((mine - acts).abs().mean())
    torch.manual_seed(seed)
    actor_loss, _ = DIPOTorchLearner.actor_loss(None, ours, None, obs, mine)
    torch.manual_seed(seed)
    ref_actor = ref.loss(theirs.detach(), cond)
    actor_loss.backward()
    ref_actor.backward()
    out["actor_loss"] = _diff(actor_loss, ref_actor)
    out["actor_grad"] = _grad_diff(list(ours.actor.parameters()), list(ref.actor.net.parameters()))
    return out


def whole_step(learner: Any, module: Any, ref: Any, rows: dict, rows2: dict, seed: int) -> dict:
    """One gradient step of our learner (actor rows improved first, as
    ``DIPO.actor_rows``) and of the reference's loop body; max |Δ| of every network
    after it, and how much the reference's order (improve after the critic step)
    changes the improved actions."""
    from ray.rllib.core.columns import Columns
    from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

    from rllib_diffusion.algorithms.replay_finetune import ACTOR_ACTIONS, ACTOR_OBS

    t = {k: torch.as_tensor(v) for k, v in rows.items()}
    obs2, act2 = rows2[Columns.OBS], rows2[Columns.ACTIONS]
    improved = learner.improve_actions(obs2, act2)
    full = rows | {ACTOR_OBS: obs2, ACTOR_ACTIONS: improved}
    torch.manual_seed(seed)
    learner.update(batch=MultiAgentBatch({"default_policy": SampleBatch(full)}, len(act2)))

    cond2 = {"state": torch.as_tensor(obs2)[:, None]}
    guided_pre = reference_action_improvement(
        ref, cond2["state"], torch.tensor(act2).reshape(-1, TA, DA), 1e-4, 10, 0.1 * TA * DA
    )
    critic_opt = torch.optim.AdamW(ref.critic.parameters(), lr=1e-3, weight_decay=0)
    actor_opt = torch.optim.AdamW(ref.actor.parameters(), lr=1e-4, weight_decay=0)
    torch.manual_seed(seed)
    loss_critic = ref.loss_critic(
        {"state": t[Columns.OBS][:, None]}, {"state": t[Columns.NEXT_OBS][:, None]},
        t[Columns.ACTIONS].reshape(-1, TA, DA), 0.01 * t[Columns.REWARDS],
        t[Columns.TERMINATEDS].float(), 0.99,
    )  # fmt: skip
    critic_opt.zero_grad()
    loss_critic.backward()
    critic_opt.step()
    guided_post = reference_action_improvement(
        ref, cond2["state"], torch.tensor(act2).reshape(-1, TA, DA), 1e-4, 10, 0.1 * TA * DA
    )
    loss_actor = ref.loss(guided_pre.detach(), cond2)
    actor_opt.zero_grad()
    loss_actor.backward()
    actor_opt.step()
    ref.update_target_critic(0.005)
    ref.update_target_actor(0.005)
    nets = {
        "actor": (module.actor, ref.actor.net),
        "actor_target": (module.actor_target, ref.actor_target.net),
        "critic": (module.critic, ref.critic),
        "critic_target": (module.critic_target, ref.critic_target),
    }
    out = {
        f"step_{name}": max(_diff(a, b) for a, b in zip(x.parameters(), y.parameters()))
        for name, (x, y) in nets.items()
    }
    out["step_improved_actions_vs_reference"] = _diff(
        torch.as_tensor(improved), guided_pre.reshape(len(act2), -1)
    )
    out["order_effect_improved_actions_max"] = _diff(guided_pre, guided_post)
    out["order_effect_improved_actions_mean"] = float((guided_pre - guided_post).abs().mean())
    out["action_step_bound"] = 10 * 1e-4
    return out


@contextmanager
def dppo_reference(mirror: Path) -> Iterator[tuple[dict[str, str], list]]:
    """The DPPO reference exported from ``mirror`` onto ``sys.path`` with its heavy imports
    stubbed; yields its origin (source, commit, how) and the stubbed imports; its modules
    are forgotten afterwards."""
    with tempfile.TemporaryDirectory() as tmp:
        exported = export_reference("dppo", mirror, Path(tmp))
        if exported is None:
            raise SystemExit(f"{mirror} holds no DPPO reference")
        sys.path.insert(0, exported["dir"])
        try:
            with stubbed_imports("dppo") as stubs:
                yield {k: exported[k] for k in ("source", "commit", "how")}, stubs
        finally:
            sys.path.remove(exported["dir"])
            _forget_modules_under(exported["dir"])


def _forget_modules_under(directory: str) -> None:
    """Drop the modules imported from ``directory`` (the exported reference), so a later
    export in the same process imports its own copy."""
    for name, module in list(sys.modules.items()):
        spec = getattr(module, "__spec__", None)
        places = [getattr(spec, "origin", None) or ""]
        places += list(getattr(spec, "submodule_search_locations", None) or [])
        if any(str(place).startswith(directory) for place in places):
            del sys.modules[name]


def check(batch_size: int, seed: int, hidden: tuple[int, ...], mirror: Path) -> dict:
    """Every figure (max |ours − reference| unless named) and the reference's origin."""
    with dppo_reference(mirror) as (origin, stubs):
        ours = our_module(hidden)
        ref = reference_model(ours)
        figures = pieces(ours, ref, batch(batch_size, seed), seed)
        ref = reference_model(our_module(hidden))
        learner, module = our_learner(hidden, ref)
        rows, rows2 = batch(batch_size, seed + 1), batch(batch_size, seed + 2)
        figures |= whole_step(learner, module, ref, rows, rows2, seed)
    return {"figures": figures, "reference": origin, "stubbed_imports": stubs}


def reference_check_main(
    argv: list[str] | None, *, name: str, description: str, check: Callable[..., dict]
) -> dict:
    """The command line of a reference check: ``check(batch, seed, hidden, mirror)``'s
    figures printed and written as ``benchmarks/results/<name>.json``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--name", default=name)
    p.add_argument("--batch", type=int, default=1000, help="minibatch (reference 1000)")
    p.add_argument("--hidden", type=int, nargs="+", default=[512, 512, 512])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mirror", type=Path, default=MIRROR)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    hidden = tuple(args.hidden)
    out = check(args.batch, args.seed, hidden, args.mirror)
    for key, value in out["figures"].items():
        print(f"{key:40s} {value:.3g}")
    write_result(
        args.name,
        out["figures"],
        reference=out["reference"],
        stubbed_imports=out["stubbed_imports"],
        setup=f"Hopper shapes (Do {OBS_DIM}, Ta {TA}, Da {DA}), DDPM-{K}, denoiser MLP "
        f"{list(hidden)} (random, ours on both sides), CriticObsAct 256x3 Mish, minibatch "
        f"{args.batch}, seed {args.seed}; figures are max |ours - reference| unless named",
    )
    return out


def main(argv: list[str] | None = None) -> dict:
    return reference_check_main(
        argv, name="dipo_reference_check", description=__doc__.split("\n\n")[0], check=check
    )


if __name__ == "__main__":
    main()
