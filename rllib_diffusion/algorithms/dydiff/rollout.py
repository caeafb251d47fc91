"""DyDiff rollouts: iterated action injection from the learning policy, terminal flags,
filtering, and the kept rollouts as transitions.

Glossary: N rollouts, H segment length, Do / Da observation / action dims. A policy is
any callable ``obs (N, Do) -> actions (N, Da)`` in data units (numpy).

As in DyDiff's ``dynamics_recursive_sampler``: the first trajectory comes from the
one-step model and the policy, autoregressively (s_{i+1} = f̄(s_i, π(s_i))); then each of
the ``rounds`` injection rounds samples s_1..s_H from the diffusion model given s_0 and
the current actions, mixes them with the previous states
(``s ← mix·s_new + (1 − mix)·s``; DyDiff averages, mix = ½) and recomputes the actions
as π(s_i) on the new states. Rewards come from the one-step ensemble's reward head.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from rllib_diffusion import columns as C
from rllib_diffusion.algorithms.regenerated_rollouts import FILTERS
from rllib_diffusion.envs.termination import TerminationFn, termination_fn

Policy = Callable[[np.ndarray], np.ndarray]


@dataclass
class Rollouts:
    """N rollouts of H steps (data units).

    Attributes:
        obs: ``(N, H + 1, Do)``, ``obs[:, 0]`` the start states.
        actions: ``(N, H, Da)``, the policy's actions on ``obs[:, :H]``.
        rewards: ``(N, H)`` predicted rewards.
        terminals: ``(N, H)`` bool, termination of each step (at ``obs[:, i + 1]``).
        disagreement: ``(N, H)`` one-step ensemble disagreement at each step.
    """

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminals: np.ndarray
    disagreement: np.ndarray

    def __len__(self) -> int:
        return int(self.obs.shape[0])

    def valid_steps(self) -> np.ndarray:
        """``(N, H)`` bool: steps up to and including the first terminal one."""
        before = np.cumsum(self.terminals, axis=1) - self.terminals
        return before == 0

    def returns(self) -> np.ndarray:
        """``(N,)`` predicted return over all H steps (DyDiff's filter score)."""
        return self.rewards.sum(axis=1)

    def max_disagreement(self) -> np.ndarray:
        """``(N,)`` largest disagreement over the valid steps."""
        return np.where(self.valid_steps(), self.disagreement, -np.inf).max(axis=1)

    def transitions(self, keep: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The valid steps of the kept rollouts (all if ``keep`` is None) as transition
        columns ``{obs, actions, rewards, new_obs, terminateds}``."""
        keep = np.ones(len(self), bool) if keep is None else np.asarray(keep, bool)
        mask = self.valid_steps() & keep[:, None]
        return {
            C.OBS: self.obs[:, :-1][mask].astype(np.float32),
            C.ACTIONS: self.actions[mask].astype(np.float32),
            C.REWARDS: self.rewards[mask].astype(np.float32),
            C.NEXT_OBS: self.obs[:, 1:][mask].astype(np.float32),
            C.TERMINATEDS: self.terminals[mask].astype(np.float32),
        }


def policy_on_states(policy: Policy, states: np.ndarray) -> np.ndarray:
    """π on every state of ``(N, T, Do)`` at once → ``(N, T, Da)``."""
    n, t, d = states.shape
    return np.asarray(policy(states.reshape(n * t, d)), dtype=np.float32).reshape(n, t, -1)


def one_step_rollout(module, policy: Policy, s0: np.ndarray) -> np.ndarray:
    """``(N, H + 1, Do)`` states of the ensemble-mean model driven by π from ``s0``."""
    states = [np.asarray(s0, np.float32)]
    for _ in range(module.dydiff_config.horizon):
        a = np.asarray(policy(states[-1]), np.float32)
        nxt = module.one_step(torch.as_tensor(states[-1]), torch.as_tensor(a))["next_obs"]
        states.append(nxt.numpy())
    return np.stack(states, axis=1)


def inject_actions(
    module,
    policy: Policy,
    s0: np.ndarray,
    *,
    rounds: int,
    mix: float = 0.5,
    generator: torch.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """DyDiff's iterated action injection from ``s0`` (N, Do): ``(states (N, H+1, Do),
    actions (N, H, Da))`` with ``actions = π(states[:, :H])`` after the last round."""
    states = one_step_rollout(module, policy, s0)
    actions = policy_on_states(policy, states[:, :-1])
    start = torch.as_tensor(states[:, 0])
    for _ in range(rounds):
        new = module.generate_states(start, torch.as_tensor(actions), generator=generator)
        states[:, 1:] = mix * new.numpy() + (1.0 - mix) * states[:, 1:]
        actions = policy_on_states(policy, states[:, :-1])
    return states, actions


def score_rollouts(
    module, states: np.ndarray, actions: np.ndarray, termination: TerminationFn | None
) -> Rollouts:
    """Rewards, disagreement and terminals of every step: the env's ``termination(next_obs)``
    where known, else the ensemble's regressed terminal flag thresholded at 0.5."""
    pred = module.one_step(torch.as_tensor(states[:, :-1]), torch.as_tensor(actions))
    if termination is not None:
        terminals = np.asarray(termination(states[:, 1:]), bool)
    else:
        terminals = pred["terminal_prob"].numpy() >= 0.5
    return Rollouts(
        obs=states.astype(np.float32),
        actions=actions.astype(np.float32),
        rewards=pred["rewards"].numpy().astype(np.float32),
        terminals=terminals,
        disagreement=pred["disagreement"].numpy().astype(np.float32),
    )


def roll_out(
    module,
    policy: Policy,
    start_obs: np.ndarray,
    *,
    rounds: int,
    mix: float,
    seed: int,
    batch_size: int = 2_048,
    tag: str = "dydiff",
) -> Rollouts:
    """:class:`Rollouts` of ``policy`` from ``start_obs`` (N, Do) through ``module``, in
    chunks of ``batch_size`` (one progress line each) with one torch generator seeded by
    ``seed``. A diffusion policy draws its noise from torch's global RNG: it is seeded
    too (same seed, same rollouts whatever ran before) and restored afterwards, so that
    rolling out leaves a training run's random stream untouched."""
    import time

    gen = torch.Generator().manual_seed(int(seed))
    termination = termination_fn(module.dydiff_config.env_id)
    parts, started = [], time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        for lo in range(0, len(start_obs), batch_size):
            s0 = start_obs[lo : lo + batch_size]
            states, actions = inject_actions(
                module, policy, s0, rounds=rounds, mix=mix, generator=gen
            )
            parts.append(score_rollouts(module, states, actions, termination))
            done = lo + len(s0)
            rate = done / max(time.perf_counter() - started, 1e-9)
            print(f"[{tag}] rolled out {done}/{len(start_obs)}  {rate:.1f}/s", flush=True)
    return Rollouts(
        **{k: np.concatenate([getattr(p, k) for p in parts]) for k in Rollouts.__annotations__}
    )


# -------------------------------------------------------------------------- filters
def hardmax_filter(returns: np.ndarray, fraction: float) -> np.ndarray:
    """DyDiff's hardmax: keep the rollouts whose return is at least the
    ``(1 − fraction)`` quantile (the top ``fraction``, ties kept)."""
    return returns >= np.quantile(returns, 1.0 - fraction)


def softmax_filter(
    returns: np.ndarray, fraction: float, *, temperature: float, rng: np.random.Generator
) -> np.ndarray:
    """DyDiff's softmax: draw ``⌊fraction·N⌋`` rollouts without replacement with
    ``p_i ∝ exp(z_i / T)``, ``z`` the standardised returns, mixed with 1e-6 of uniform."""
    eps = 1e-6
    z = (returns - returns.mean()) / (returns.std() + eps)
    logits = z / temperature
    p = np.exp(logits - logits.max())
    p = p / p.sum() * (1 - eps) + eps / len(p)
    chosen = rng.choice(len(p), size=int(fraction * len(p)), replace=False, p=p / p.sum())
    keep = np.zeros(len(p), bool)
    keep[chosen] = True
    return keep


def disagreement_filter(max_disagreement: np.ndarray, threshold: float) -> np.ndarray:
    """Keep the rollouts whose largest one-step disagreement is ``<= threshold``."""
    return max_disagreement <= threshold


def filter_rollouts(
    rollouts: Rollouts,
    kind: str,
    *,
    fraction: float,
    threshold: float,
    temperature: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """``(N,)`` bool mask of the rollouts ``kind`` (one of :data:`FILTERS`) keeps."""
    if kind == "hardmax":
        return hardmax_filter(rollouts.returns(), fraction)
    if kind == "softmax":
        return softmax_filter(rollouts.returns(), fraction, temperature=temperature, rng=rng)
    if kind == "disagreement":
        return disagreement_filter(rollouts.max_disagreement(), threshold)
    raise ValueError(f"unknown filter {kind!r}; allowed: {', '.join(FILTERS)}.")
