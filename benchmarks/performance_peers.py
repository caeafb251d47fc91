"""The peers and ceilings of ``benchmarks/performance.py``: the reference implementations
(imported unmodified at run time from a ``git archive`` of their mirrors), a minimal
PyTorch DDPM-BC loop and raw gymnasium vector envs. Each ``*_bench`` returns a
:class:`Bench`; its ``run(calls)`` does ``calls`` timed units of work and returns how
many units (chains, pairs, gradient steps, actions, env steps) they were.

Not a script: ``benchmarks/performance.py`` runs these in its peer worker processes.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import subprocess
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OBS_DIM, ACTION_DIM, HORIZON = 11, 3, 4
#: Gradient-step counter of the reference Diffusion-QL agent: past its EMA warm-up
#: (``step_start_ema`` = 1000), as ``learner_speed.STEADY_STATE_STEP`` for ours.
STEADY_STATE_STEP = 10_000
#: reference -> (files exported from its mirror, a file that must exist afterwards)
REFERENCE_FILES = {
    "dppo": (["model"], "model/diffusion/diffusion_ppo.py"),
    "dql": (["agents", "utils"], "agents/ql_diffusion.py"),
}
#: Imports of the reference modules that their timed code paths never use; stubbed
#: (an empty module whose attributes raise) only where the package is not installed.
STUBBABLE = {"dppo": ["einops", "einops.layers", "einops.layers.torch"], "dql": ["tabulate"]}


@dataclass
class Bench:
    """``run(calls) -> units done``; ``config`` describes the setup (stored in the JSON)."""

    run: Callable[[int], int]
    config: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------ reference source trees
def _git_dir(source: Path) -> Path | None:
    """The bare git repository of a mirror (``source`` itself or ``source/repo``)."""
    for d in (source / "repo", source):
        if (d / "HEAD").is_file() and (d / "objects").is_dir():
            return d
    return None


def export_reference(name: str, source: Path, dest: Path) -> dict[str, Any] | None:
    """Make reference ``name`` importable from a directory: a mirror (bare git repo, or a
    folder holding one as ``repo/``) is exported with ``git archive HEAD`` into ``dest``;
    a checkout is used in place. None when ``source`` holds neither."""
    paths, must_exist = REFERENCE_FILES[name]
    git_dir = _git_dir(source)
    if git_dir is None:
        if not (source / must_exist).is_file():
            return None
        return {"dir": str(source), "source": str(source), "commit": None, "how": "checkout"}
    git = ["git", "--git-dir", str(git_dir)]
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run([*git, "archive", "HEAD", *paths], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    if not (dest / must_exist).is_file():
        return None
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True)
    return {
        "dir": str(dest),
        "source": str(source),
        "commit": commit.stdout.strip(),
        "how": f"git archive HEAD {' '.join(paths)}",
    }


def _stub_attribute(module: str) -> Callable[[str], Any]:
    """A stub module's ``__getattr__``: any name is a callable that raises."""

    def get(attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)

        def fail(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError(f"{module}.{attr} is a benchmark stub ({module} not installed)")

        return fail

    return get


@contextlib.contextmanager
def stubbed_imports(name: str) -> Iterator[list[str]]:
    """Stub the never-used imports of reference ``name`` that are not installed while
    its modules are imported; yields the stubbed module names. The stubs leave
    ``sys.modules`` afterwards, so other code (torch probes for ``tabulate`` and
    ``einops``) still finds them missing."""
    stubbed = []
    for module in STUBBABLE[name]:
        top = module.split(".")[0]
        if module in sys.modules or (top not in stubbed and importlib.util.find_spec(top)):
            continue
        stub = types.ModuleType(module)
        stub.__spec__ = importlib.machinery.ModuleSpec(module, None, is_package=True)
        stub.__path__ = []  # a package: its stubbed submodules import
        stub.__getattr__ = _stub_attribute(module)  # type: ignore[method-assign]
        sys.modules[module] = stub
        if "." in module:
            parent, _, child = module.rpartition(".")
            setattr(sys.modules[parent], child, stub)
        stubbed.append(module)
    try:
        yield stubbed
    finally:
        for module in stubbed:
            sys.modules.pop(module, None)


# ------------------------------------------------------------------ DPPO reference
def _dppo_model(sizes: dict[str, Any]):
    """``PPODiffusion`` with networks of our DPPO module's shape and cost: the reference's
    plain ``MLP`` (``residual_style=False``) has the same Linear layers and one Mish per
    hidden layer, as ours (whose skips are only adds). Its ``ResidualMLP`` (the Hopper
    config's) has one Mish fewer per network: it would time a cheaper network."""
    import torch
    from model.common.critic import CriticObs
    from model.diffusion.diffusion_ppo import PPODiffusion
    from model.diffusion.mlp_diffusion import DiffusionMLP

    torch.manual_seed(0)
    net = {"activation_type": "Mish", "residual_style": False}
    actor = DiffusionMLP(
        ACTION_DIM, HORIZON, OBS_DIM, time_dim=16, mlp_dims=list(sizes["hidden"]), **net
    )
    critic = CriticObs(OBS_DIM, mlp_dims=list(sizes["critic_hidden"]), **net)
    knobs = {
        "ft_denoising_steps": sizes["ft_steps"], "denoising_steps": sizes["denoising_steps"],
        "horizon_steps": HORIZON, "obs_dim": OBS_DIM, "action_dim": ACTION_DIM, "device": "cpu",
        "gamma_denoising": 0.99, "clip_ploss_coef": 0.01, "clip_ploss_coef_base": 0.01,
        "clip_ploss_coef_rate": 3, "randn_clip_value": 3, "min_sampling_denoising_std": 0.1,
        "min_logprob_denoising_std": 0.1,
    }  # fmt: skip
    model = PPODiffusion(actor=actor, critic=critic, **knobs)
    config = {
        "class": "model.diffusion.diffusion_ppo.PPODiffusion",
        "actor": f"DiffusionMLP time_dim 16, MLP {list(sizes['hidden'])} Mish (residual_style False)",
        "critic": f"CriticObs MLP {list(sizes['critic_hidden'])} Mish (residual_style False)",
        **knobs,
    }
    return model, config


def dppo_sample_bench(sizes: dict[str, Any]) -> Bench:
    """Reference DPPO exploration sampling: ``model(cond, deterministic=False,
    return_chain=True)`` on a batch of ``sizes["batch"]`` observations."""
    import torch

    model, config = _dppo_model(sizes)
    cond = {
        "state": torch.randn(sizes["batch"], 1, OBS_DIM, generator=torch.Generator().manual_seed(1))
    }

    def run(calls: int) -> int:
        for _ in range(calls):
            model(cond, deterministic=False, return_chain=True)
        return calls * sizes["batch"]

    return Bench(
        run,
        {
            **config,
            "batch": sizes["batch"],
            "call": "model(cond, deterministic=False, return_chain=True)",
        },
    )


def dppo_update_bench(sizes: dict[str, Any], pairs: int, steps: int) -> Bench:
    """Reference DPPO update: ``PPODiffusion.loss`` on a minibatch of ``pairs`` (env step,
    denoising step) pairs (its own chains), backward, and the actor's and critic's AdamW
    steps, as the reference agent does per minibatch."""
    import torch

    model, config = _dppo_model(sizes)
    k_ft = sizes["ft_steps"]
    n = max(1, pairs // k_ft)
    g = torch.Generator().manual_seed(2)
    cond = {"state": torch.randn(n, 1, OBS_DIM, generator=g)}
    with torch.no_grad():
        chains = model(cond, deterministic=False, return_chain=True).chains
        logp = model.get_logprobs(cond, chains).view(n, k_ft, HORIZON, ACTION_DIM)
    returns, values, adv = (torch.randn(n, generator=g) for _ in range(3))
    actor_opt = torch.optim.AdamW(model.actor_ft.parameters(), lr=1e-4, weight_decay=0)
    critic_opt = torch.optim.AdamW(model.critic.parameters(), lr=1e-3, weight_decay=0)

    def run(calls: int) -> int:
        for _ in range(calls * steps):
            pg, ent, v, *_ = model.loss(cond, chains, returns, values, adv, logp)
            loss = pg + 0.0 * ent + 0.5 * v
            actor_opt.zero_grad()
            critic_opt.zero_grad()
            loss.backward()
            actor_opt.step()
            critic_opt.step()
        return calls * steps * n * k_ft

    extra = {
        "env_steps_per_minibatch": n,
        "pairs_per_minibatch": n * k_ft,
        "optimizers": "AdamW (actor_ft lr 1e-4, critic lr 1e-3), no grad clipping (hopper config)",
    }
    return Bench(run, {**config, **extra, "minibatches_per_call": steps})


# --------------------------------------------------------- Diffusion-QL reference
def _dql_agent():
    """``Diffusion_QL`` as the reference ``main.py`` builds it for hopper-medium-v2."""
    import torch
    from agents.ql_diffusion import Diffusion_QL

    torch.manual_seed(0)
    knobs = {
        "state_dim": OBS_DIM, "action_dim": ACTION_DIM, "max_action": 1.0, "device": "cpu",
        "discount": 0.99, "tau": 0.005, "max_q_backup": False, "eta": 1.0,
        "beta_schedule": "vp", "n_timesteps": 5, "lr": 3e-4, "lr_decay": False, "grad_norm": 9.0,
    }  # fmt: skip
    agent = Diffusion_QL(**knobs)
    agent.step = STEADY_STATE_STEP
    config = {
        "class": "agents.ql_diffusion.Diffusion_QL",
        "actor": "agents.model.MLP 3x256 Mish, t_dim 16",
        "critic": "two 3x256 Mish Q heads",
        **knobs,
        "step": STEADY_STATE_STEP,
    }
    return agent, config


def dql_update_bench(sizes: dict[str, Any]) -> Bench:
    """Reference ``Diffusion_QL.train(replay_buffer, iterations, batch_size)`` on random
    data behind its own ``Data_Sampler``."""
    import numpy as np
    from utils.data_sampler import Data_Sampler

    agent, config = _dql_agent()
    rng = np.random.default_rng(1)
    rows, f32 = sizes["dql_rows"], np.float32
    data = {
        "observations": rng.standard_normal((rows, OBS_DIM)).astype(f32),
        "actions": rng.uniform(-1, 1, (rows, ACTION_DIM)).astype(f32),
        "next_observations": rng.standard_normal((rows, OBS_DIM)).astype(f32),
        "rewards": rng.standard_normal(rows).astype(f32),
        "terminals": (rng.uniform(size=rows) > 0.9).astype(f32),
    }
    sampler = Data_Sampler(data, "cpu")
    steps, batch = sizes["dql_steps"], sizes["dql_batch"]

    def run(calls: int) -> int:
        for _ in range(calls):
            agent.train(sampler, iterations=steps, batch_size=batch)
        return calls * steps

    return Bench(
        run, {**config, "batch_size": batch, "iterations_per_call": steps, "dataset_rows": rows}
    )


def dql_action_bench(sizes: dict[str, Any]) -> Bench:
    """Reference ``Diffusion_QL.sample_action(state)``: 50 candidates, one action."""
    import numpy as np

    agent, config = _dql_agent()
    states = np.random.default_rng(1).standard_normal((64, OBS_DIM)).astype(np.float32)

    def run(calls: int) -> int:
        for i in range(calls):
            agent.sample_action(states[i % len(states)])
        return calls

    return Bench(
        run, {**config, "call": "sample_action(state) (50 candidates, softmax over target min-Q)"}
    )


# ------------------------------------------------------------- minimal DDPM-BC loop
def minimal_bc_bench(sizes: dict[str, Any]) -> Bench:
    """A minimal PyTorch DDPM behaviour-cloning loop: ε-prediction MSE on a cosine
    schedule, the same residual Mish MLP and sinusoidal time embedding as ours, AdamW;
    no EMA, no RLlib."""
    import math

    import torch
    from torch import nn

    torch.manual_seed(0)
    k, b, flat, t_dim = sizes["denoising_steps"], sizes["bc_batch"], HORIZON * ACTION_DIM, 16
    hidden = list(sizes["hidden"])
    s = torch.arange(k + 1, dtype=torch.float64) / k
    abar = torch.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
    betas = (1 - abar[1:] / abar[:-1]).clamp(max=0.999)
    alpha_bar = torch.cumprod(1 - betas, 0).float()
    freqs = torch.exp(torch.arange(t_dim // 2) * -(math.log(10_000) / (t_dim // 2 - 1)))
    time_mlp = nn.Sequential(nn.Linear(t_dim, 2 * t_dim), nn.Mish(), nn.Linear(2 * t_dim, t_dim))
    dims = [flat + t_dim + OBS_DIM, *hidden]
    layers = nn.ModuleList(
        nn.Sequential(nn.Linear(i, o), nn.Mish()) for i, o in zip(dims[:-1], dims[1:])
    )
    head = nn.Linear(hidden[-1], flat)
    params = [*time_mlp.parameters(), *layers.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-4)
    obs = torch.randn(sizes["bc_rows"], OBS_DIM)
    act = torch.rand(sizes["bc_rows"], flat) * 2 - 1

    def eps_net(x: torch.Tensor, t: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        ang = t[:, None].float() * freqs[None]
        h = torch.cat([x, time_mlp(torch.cat([ang.sin(), ang.cos()], -1)), o], -1)
        for layer in layers:
            h = h + layer(h) if h.shape[-1] == layer[0].out_features else layer(h)
        return head(h)

    def step() -> None:
        idx = torch.randint(len(obs), (b,))
        x0, t, eps = act[idx], torch.randint(k, (b,)), torch.randn(b, flat)
        ab = alpha_bar[t][:, None]
        loss = nn.functional.mse_loss(
            eps_net(ab.sqrt() * x0 + (1 - ab).sqrt() * eps, t, obs[idx]), eps
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def run(calls: int) -> int:
        for _ in range(calls * sizes["bc_steps"]):
            step()
        return calls * sizes["bc_steps"]

    return Bench(
        run,
        {
            "loop": "minimal DDPM-BC (benchmarks/performance_peers.minimal_bc_bench)",
            "batch": b,
            "denoising_steps": k,
            "hidden": hidden,
            "activation": "mish",
            "residual": True,
            "time_dim": t_dim,
            "optimizer": "torch.optim.AdamW lr 1e-4 (default foreach)",
            "ema": False,
            "steps_per_call": sizes["bc_steps"],
        },
    )


# ------------------------------------------------------------- raw env ceiling
def raw_env_bench(sizes: dict[str, Any]) -> Bench:
    """gymnasium ``SyncVectorEnv`` of ``sizes["envs"]`` Hopper-v5 envs, random actions
    (``action_space.sample()``): the ceiling of a one-process EnvRunner."""
    import gymnasium as gym

    n = sizes["envs"]
    envs = gym.vector.SyncVectorEnv([lambda: gym.make("Hopper-v5") for _ in range(n)])
    envs.reset(seed=0)
    envs.action_space.seed(0)
    steps = sizes["env_vector_steps"]

    def run(calls: int) -> int:
        for _ in range(calls * steps):
            envs.step(envs.action_space.sample())
        return calls * steps * n

    return Bench(
        run,
        {
            "env": "Hopper-v5",
            "num_envs": n,
            "vector": "gymnasium.vector.SyncVectorEnv",
            "actions": "envs.action_space.sample()",
            "vector_steps_per_call": steps,
            "gymnasium": gym.__version__,
        },
    )


PEERS: dict[str, tuple[str, Callable[[dict[str, Any]], Bench]]] = {
    "dppo_sample": ("dppo", dppo_sample_bench),
    "dppo_update_10k": ("dppo", lambda s: dppo_update_bench(s, s["pairs_10k"], 2)),
    "dppo_update_50k": ("dppo", lambda s: dppo_update_bench(s, s["pairs_50k"], 1)),
    "dql_update": ("dql", dql_update_bench),
    "dql_action": ("dql", dql_action_bench),
    "bc": ("plain", minimal_bc_bench),
    "envrunner": ("plain", raw_env_bench),
}
