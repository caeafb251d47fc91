"""Tiny inputs shared by the algorithm tests: random transition batches (the offline
Q-learners), and for the fine-tuning of a pretrained denoiser (DRWR/DAWR, DIPO/QSM,
online DQL/IDQL) a tiny policy config, a twin critic with a known action gradient,
replay rows, a seeded local learner, the CLI's config, the ``finetune`` run and its
smoke/resume and learning checks. Fixtures (a fake DiffusionBC checkpoint, the weak
toy-task policy) are in ``conftest.py``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_episode import SingleAgentEpisode
from torch import nn

#: The tiny policy's observation dim, action dim, horizon and denoising steps.
OBS_DIM, DA, TA, K = 3, 2, 4, 5
#: Model-config knobs of tiny critics (the learner tests).
TINY_CRITICS = {"critic_hidden_dims": (8,)}


def transition_batch(n: int, obs_dim: int, act_dim: int, seed: int = 0) -> dict:
    """``n`` random transitions: obs/next obs ~ N(0, 1), actions ~ U(-1, 1), rewards
    ~ N(0, 1), terminations ~ Bernoulli(0.5); the same tensors for the same seed."""
    g = torch.Generator().manual_seed(seed)
    return {
        Columns.OBS: torch.randn(n, obs_dim, generator=g),
        Columns.ACTIONS: torch.rand(n, act_dim, generator=g) * 2 - 1,
        Columns.REWARDS: torch.randn(n, generator=g),
        Columns.NEXT_OBS: torch.randn(n, obs_dim, generator=g),
        Columns.TERMINATEDS: (torch.rand(n, generator=g) > 0.5).float(),
    }


def td_batch() -> dict:
    """Four tiny-policy transitions (:func:`transition_batch`) with hand-picked rewards
    ``(10, 20, 0, −10)`` and terminations ``(no, yes, no, yes)`` (the TD-target tests)."""
    return transition_batch(4, OBS_DIM, TA * DA) | {
        Columns.REWARDS: torch.tensor([10.0, 20.0, 0.0, -10.0]),
        Columns.TERMINATEDS: torch.tensor([False, True, False, True]),
    }


def replay_rows(n: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """``n`` numpy replay rows of the tiny policy (reward 1, none terminal), as
    ``learner.update`` gets them."""
    rng = np.random.default_rng(seed)
    return {
        Columns.OBS: rng.normal(size=(n, OBS_DIM)).astype(np.float32),
        Columns.ACTIONS: rng.uniform(-1, 1, (n, TA * DA)).astype(np.float32),
        Columns.REWARDS: np.ones(n, np.float32),
        Columns.NEXT_OBS: rng.normal(size=(n, OBS_DIM)).astype(np.float32),
        Columns.TERMINATEDS: np.zeros(n, bool),
    }


def stepped_episode(
    obs: np.ndarray, actions: np.ndarray, rewards: list, *, terminated: bool
) -> SingleAgentEpisode:
    """An episode from ``obs[0]`` through ``len(actions)`` steps (``obs`` ``(T + 1, Do)``,
    ``actions`` ``(T, Da)``, ``rewards`` ``T`` values), terminated at its last step or
    left open (the replay tests)."""
    ep = SingleAgentEpisode(observations=[obs[0]])
    for t in range(len(actions)):
        last = t == len(actions) - 1
        ep.add_env_step(obs[t + 1], actions[t], rewards[t], terminated=terminated and last)
    return ep


def tiny_policy(sampler: str = "ddpm", k: int = K) -> dict:
    """A tiny DiffusionBC policy config (``OBS_DIM``, ``DA``, ``TA``, ``k`` denoising
    steps) as a dict."""
    from rllib_diffusion.modules.model_config import DiffusionPolicyConfig

    return DiffusionPolicyConfig(
        obs_dim=OBS_DIM,
        action_dim=DA,
        horizon=TA,
        act_steps=2,
        denoising_steps=k,
        sampler=sampler,
        hidden_dims=(16, 16),
    ).to_dict()


class LinearTwinQ(nn.Module):
    """``Q_i(s, a) = w_i·a + c_i`` (no dependence on s): ``(B, Do), (B, N) -> (2, B)``."""

    def __init__(self, w: torch.Tensor, c: tuple[float, float] = (0.0, 0.0)) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())  # (2, N)
        self.c = torch.tensor(c)

    def forward(self, obs, actions):
        return self.w @ actions.reshape(actions.shape[0], -1).T + self.c[:, None]


def tiny_learner(config_cls: type, model_cls: type, model: dict | None = None, **training):
    """A local learner of ``config_cls`` (``training`` knobs) on the tiny policy with
    model config ``model_cls(policy, **model)``, built after ``torch.manual_seed(0)``:
    ``(learner, config, module)``."""
    from rllib_diffusion.envs.chunking import chunk_spaces

    obs_space, act_space = chunk_spaces(OBS_DIM, TA, DA)
    config = (
        config_cls()
        .environment(observation_space=obs_space, action_space=act_space)
        .training(**training)
        .rl_module(model_config=model_cls(policy=tiny_policy(), **(model or {})).to_dict())
    )
    torch.manual_seed(0)
    learner = config.build_learner(spaces={"default_policy": (obs_space, act_space)})
    return learner, config, learner.module["default_policy"].unwrapped()


def snapshot(net: nn.Module) -> list[torch.Tensor]:
    """Copies of ``net``'s parameters."""
    return [p.detach().clone() for p in net.parameters()]


def moved(net: nn.Module, before: list[torch.Tensor]) -> bool:
    """Whether any parameter of ``net`` differs from its :func:`snapshot` ``before``."""
    return any(not torch.equal(p, q) for p, q in zip(net.parameters(), before))


def update(learner: Any, rows: dict[str, np.ndarray], **kwargs: Any) -> dict:
    """One ``learner.update`` on ``rows`` (numpy columns); the module's results."""
    from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

    n = len(rows[Columns.OBS])
    batch = MultiAgentBatch({"default_policy": SampleBatch(rows)}, env_steps=n)
    return learner.update(batch=batch, **kwargs)["default_policy"]


def replay_learner_steps(learner: Any, module: Any) -> tuple[dict, list[torch.Tensor]]:
    """A replay fine-tuning learner (DIPO/QSM/DQL/IDQL) on :func:`replay_rows`: without
    actor rows the critics and their targets move, the actor does not (no actor loss);
    with them the actor moves too. Returns the second update's results and the actor's
    parameters before it."""
    from rllib_diffusion.algorithms.replay_finetune import ACTOR_ACTIONS, ACTOR_OBS

    rows = replay_rows()
    actor0, critic0 = snapshot(module.actor), snapshot(module.critic)
    target0 = snapshot(module.critic_target)
    res = update(learner, rows)
    assert moved(module.critic, critic0) and moved(module.critic_target, target0)
    assert not moved(module.actor, actor0) and "losses/actor_loss" not in res
    actor_rows = {ACTOR_OBS: rows[Columns.OBS], ACTOR_ACTIONS: rows[Columns.ACTIONS]}
    res = update(learner, rows | actor_rows)
    assert moved(module.actor, actor0) and "losses/actor_loss" in res
    return res, actor0


def cli_finetune_config(algo: str, checkpoint: str, *flags: str) -> Any:
    """The validated config of ``rllib-diffusion finetune --algo ALGO --checkpoint
    CHECKPOINT FLAGS``."""
    from rllib_diffusion.algorithms.denoiser_finetune import denoiser_finetune_config
    from rllib_diffusion.algorithms.finetune_run import validated
    from rllib_diffusion.cli import build_parser, finetune_settings_from_args

    argv = ["finetune", "--algo", algo, "--checkpoint", checkpoint, *flags]
    settings = finetune_settings_from_args(build_parser().parse_args(argv))
    return validated(denoiser_finetune_config(settings), algo)


def run_finetune(algo: str, checkpoint: str, out: Path, **kw: Any) -> dict:
    """``finetune --algo ALGO`` from ``checkpoint`` into ``out`` (``kw``: settings and
    knobs by name); its summary."""
    from rllib_diffusion.algorithms.finetune_run import FinetuneSettings, finetune

    return finetune(FinetuneSettings.of(algo=algo, checkpoint=checkpoint, out_dir=str(out), **kw))


#: Run control of the smoke runs: 2 envs, 40 decisions, evaluation and checkpoint each
#: iteration.
SMOKE = dict(
    num_envs_per_env_runner=2,
    decisions_per_iteration=40,
    eval_interval=1,
    eval_episodes=2,
    checkpoint_interval=1,
)


def smoke_and_resume(algo: str, pretrained: Any, out: Path, env_steps: int, **kw: Any) -> dict:
    """A smoke run (:data:`SMOKE` and ``kw``) from the session's tiny Hopper DiffusionBC
    policy up to ``env_steps``, then ``--resume`` to one env step more. Checks the final
    evaluation and the checkpoint meta (algorithm, env steps); returns ``summary``,
    ``lines`` (the first run's progress) and ``resumed`` (the resumed summary)."""
    checkpoint = str(pretrained[0] / "checkpoint")
    summary = run_finetune(algo, checkpoint, out, env_steps=env_steps, **SMOKE, **kw)
    lines = [json.loads(x) for x in (out / "progress.jsonl").read_text().splitlines()]
    assert summary["final_evaluation"]["num_episodes"] == 2
    meta = json.loads((out / "checkpoint" / "rllib_diffusion.json").read_text())
    assert meta["algorithm"] == algo.upper() and meta["env_steps"] == lines[-1]["env_steps"]
    budget = lines[-1]["env_steps"] + 1
    resumed = run_finetune(algo, checkpoint, out, env_steps=budget, resume=True, **SMOKE, **kw)
    return {"summary": summary, "lines": lines, "meta": meta, "resumed": resumed}


def replay_finetune_smoke(algo: str, pretrained: Any, out: Path) -> list[dict]:
    """:func:`smoke_and_resume` of a replay fine-tuning algorithm (DIPO/QSM/DQL/IDQL;
    minibatches of 16, no warm-up) to 300 env steps: the replay's size and its return
    with the checkpoint. Returns the first run's progress lines."""
    knobs = {"minibatch_size": 16, "critic_warmup_decisions": 0}
    run = smoke_and_resume(algo, pretrained, out, 300, knobs=knobs)
    lines = run["lines"]
    # Two iterations: 40 decisions of <= 4 actions, then the >= 35 the budget still needs
    # (<= 1.5 iterations' worth), topped up inside that iteration where episodes ended
    # inside a chunk; at most one vector step (2 envs x 4 actions) over the budget.
    assert len(lines) == 3 and 300 <= lines[-1]["env_steps"] <= 308
    assert lines[-1]["trained_decisions"] > 0 and lines[-1]["critic_loss"] >= 0
    assert 75 <= lines[-1]["buffer_decisions"] <= lines[-1]["env_steps"]
    # The replay came back with the checkpoint (one more vector step of 2 decisions).
    assert run["resumed"]["progress"][-1]["buffer_decisions"] == lines[-1]["buffer_decisions"] + 2
    return lines


def pretrain_biased(root: Path, name: str, **settings: Any) -> dict:
    """Diffusion BC on the biased toy data (``ReachTarget-v0`` acting at ``target +
    0.5``, ``test_dppo_learning.biased_dataset``: a weak policy, return ≈ 5 of 10) into
    ``root/name``: horizon 1, 64-64, 1,500 steps of 500 per iteration, batches of 128,
    10 evaluation episodes; ``settings`` (``denoising_steps``, ``sampler``, ...) over
    those. Its pretrain summary."""
    from rllib_diffusion.algorithms.bc.pretrain import PretrainSettings, pretrain
    from rllib_diffusion.data import save_npz
    from tests.algorithms.test_dppo_learning import biased_dataset

    data = save_npz(biased_dataset(), root / "reach.npz")
    base = dict(
        horizon=1,
        act_steps=1,
        hidden_dims=(64, 64),
        gradient_steps=1500,
        steps_per_iteration=500,
        batch_size=128,
        warmup_steps=0,
        eval_episodes=10,
    )
    return pretrain(PretrainSettings(dataset=data, out_dir=str(root / name), **base | settings))


def improves_weak_policy(algo: str, weak_policy: dict, out: Path, **knobs: Any) -> dict:
    """``algo`` with ``knobs`` for 8,000 env steps (10 envs, 500 decisions per
    iteration, evaluation of 20 episodes at both ends) from the weak toy-task policy:
    its return must rise by more than 1. Returns the summary."""
    summary = run_finetune(
        algo,
        weak_policy["checkpoint"],
        out,
        env_steps=8000,
        num_envs_per_env_runner=10,
        decisions_per_iteration=500,
        eval_interval=0,
        eval_episodes=20,
        checkpoint_interval=0,
        knobs=knobs,
    )
    before = summary["start_evaluation"]["episode_return_mean"]
    after = summary["final_evaluation"]["episode_return_mean"]
    print(json.dumps({"algo": algo, "before": before, "after": after}))
    assert before < 6.0, "the pretrained policy should be weak (biased data)"
    assert after > before + 1.0, f"{algo} did not improve the policy: {before:.2f} -> {after:.2f}"
    return summary


def record_updates(algo: Any, monkeypatch: Any) -> tuple[list[int], list[int]]:
    """Record, for each ``algo.train()`` of a synthetic-segments PPO (DiffPPO, DPPO), the
    update rows (``synthetic_ppo.update_rows``) of the real episodes and then of the
    synthetic ones, counted before the learner connectors extend them, and the minibatch
    size each learner update got. Returns the two lists, filled as ``train()`` runs."""
    from rllib_diffusion.algorithms.synthetic_ppo import update_rows

    rows: list[int] = []
    sizes: list[int] = []
    real_update, synthesize = algo.learner_group.update, algo.synthesize

    def recording_update(**kw):
        rows.append(update_rows(kw["episodes"]))
        sizes.append(kw["minibatch_size"])
        return real_update(**kw)

    monkeypatch.setattr(algo.learner_group, "update", recording_update)
    monkeypatch.setattr(
        algo, "synthesize", lambda eps: rows.append(update_rows(eps)) or synthesize(eps)
    )
    return rows, sizes
