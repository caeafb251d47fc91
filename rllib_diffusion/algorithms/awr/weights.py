"""Returns, TD(λ) targets and regression weights of DRWR and DAWR (pure numpy/torch, no
``ray``).

Glossary: N decisions (rows, one executed action chunk each), laid out segment after
segment in time order; a segment is one episode or the part of one that the store holds.
``last[i]`` marks the last row of a segment, ``terminated[i]`` a row after which the env
terminated (only ever a last row).

Definitions follow the DPPO reference (irom-lab/dppo, ``train_rwr_diffusion_agent.py``,
``train_awr_diffusion_agent.py``), as stated in each docstring.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

#: Added to the std when DRWR normalises the returns of an iteration (the reference's).
RWR_STD_EPS = 1e-3
#: Added to the std when DAWR normalises the advantages of a minibatch (the reference's).
AWR_STD_EPS = 1e-6


def discounted_returns(rewards: np.ndarray, last: np.ndarray, gamma: float) -> np.ndarray:
    """Return-to-go of every row, ``G_i = r_i + γ·(1 − last_i)·G_{i+1}``.

    Args:
        rewards: ``(N,)`` per-decision rewards (summed over the chunk's env steps).
        last: ``(N,)`` bool, the last row of each episode.
        gamma: discount per decision.

    Returns:
        ``(N,)`` float64 returns (no bootstrap: DRWR uses complete episodes only).
    """
    out = np.zeros(len(rewards), np.float64)
    running = 0.0
    for i in range(len(rewards) - 1, -1, -1):
        running = float(rewards[i]) + gamma * (0.0 if last[i] else running)
        out[i] = running
    return out


def td_lambda_targets(
    rewards: np.ndarray,
    values: np.ndarray,
    next_values: np.ndarray,
    last: np.ndarray,
    terminated: np.ndarray,
    *,
    gamma: float,
    lam: float,
    alpha: float,
) -> np.ndarray:
    """The reference DAWR's ``td_values``: ``δ_i = r_i + γ·(1 − term_i)·V'_i − V_i``,
    ``u_i = α·δ_i + γ·λ·(1 − last_i)·u_{i+1}``, target ``y_i = V_i + u_i``.

    ``V'_i`` is the value of the next observation: ``V_{i+1}`` inside a segment, at a
    segment's end the value of its final observation (0 after termination). The
    reference runs the recursion over its whole buffer per env and resets it on
    termination only; here each segment bootstraps at its end, so a time-limit reset
    does not leak the next episode's values into this one.

    Args:
        rewards, values, next_values: ``(N,)``.
        last, terminated: ``(N,)`` bool.
        gamma: discount per decision; lam: λ; alpha: the reference's step ``α``.

    Returns:
        ``(N,)`` float64 targets.
    """
    nonterminal = 1.0 - terminated.astype(np.float64)
    delta = rewards + gamma * nonterminal * next_values - values
    carry = gamma * lam * (1.0 - last.astype(np.float64))
    u = np.zeros(len(rewards), np.float64)
    running = 0.0
    for i in range(len(rewards) - 1, -1, -1):
        running = alpha * float(delta[i]) + float(carry[i]) * running
        u[i] = running
    return values + u


def rwr_weights(returns: np.ndarray, beta: float, max_weight: float) -> np.ndarray:
    """DRWR weights of one iteration's rows: ``w = min(exp(β·(G − mean G)/(std G + 1e-3)),
    max_weight)`` with the population std over all rows, as the reference."""
    returns = np.asarray(returns, np.float64)
    z = (returns - returns.mean()) / (returns.std() + RWR_STD_EPS)
    return np.minimum(np.exp(beta * z), max_weight)


def awr_weights(advantages: Tensor, beta: float, max_weight: float) -> Tensor:
    """DAWR weights of one minibatch: ``w = min(exp(β·(A − mean A)/(std A + 1e-6)),
    max_weight)`` with torch's (unbiased) std over the minibatch, as the reference."""
    adv = advantages.float()
    z = (adv - adv.mean()) / (adv.std() + AWR_STD_EPS)
    return torch.exp(beta * z).clamp(max=max_weight)
