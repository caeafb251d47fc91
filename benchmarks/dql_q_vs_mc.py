"""Diagnostic (issue #15): the critic's Q on the replay's rows against their discounted
Monte-Carlo return, for checkpoints of the replay fine-tuners (``finetune --algo dql``,
also DIPO/QSM: any checkpoint whose algorithm state holds the replay and whose module has
twin ``critic`` / ``critic_target``).

The Monte-Carlo return of a row is ``Σ_k γ^k · reward_scale · r_{t+k}`` along its episode
in the replay, one decision (an executed action chunk, its chunk reward summed) per step,
as the TD targets see them. The replay keeps no episode ids: a row's successor is the
first later row whose observation equals its next observation (the EnvRunners' episode
chunks of one episode are added in order); a segment ends at a termination (exact) or
where no successor is held (a truncation or the replay's end: the return counts no
future there, a lower bound, reported as the share of rows whose segment terminates).

Example::

    python benchmarks/dql_q_vs_mc.py --checkpoint start=runs/x/actor_start \
        --checkpoint end=runs/x/dql_s0/checkpoint --name dql_q_vs_mc
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

#: Algorithm-state key of the replay (``replay_finetune.REPLAY_STATE``).
REPLAY_KEY = "replay_finetune_replay"
MODULE_DIR = "learner_group/learner/rl_module/default_policy"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--checkpoint",
        action="append",
        required=True,
        metavar="LABEL=PATH",
        help="a fine-tuning checkpoint (repeat)",
    )
    p.add_argument("--reward-scale", type=float, default=0.01)
    p.add_argument("--gamma", type=float, default=0.99, help="discount per decision")
    p.add_argument("--name", default="dql_q_vs_mc", help="result file name")
    return p.parse_args(argv)


def successors(obs: np.ndarray, next_obs: np.ndarray, terminated: np.ndarray) -> np.ndarray:
    """Index of each row's successor row ``(n,)`` (−1: none held or terminated): the first
    later row whose observation equals the row's next observation."""
    first_after: dict[bytes, list[int]] = {}
    for j in range(len(obs)):
        first_after.setdefault(obs[j].tobytes(), []).append(j)
    succ = np.full(len(obs), -1, np.int64)
    for i in range(len(obs)):
        if terminated[i]:
            continue
        later = [j for j in first_after.get(next_obs[i].tobytes(), []) if j > i]
        if later:
            succ[i] = later[0]
    return succ


def monte_carlo(
    rewards: np.ndarray, succ: np.ndarray, terminated: np.ndarray, gamma: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(returns, ends_terminal)`` per row: the discounted return along successors
    (successors are later rows, so one backward pass), and whether the segment ends in a
    termination."""
    g = np.zeros(len(rewards))
    term = np.zeros(len(rewards), bool)
    for i in range(len(rewards) - 1, -1, -1):
        j = succ[i]
        g[i] = rewards[i] + (gamma * g[j] if j >= 0 else 0.0)
        term[i] = bool(terminated[i]) or (j >= 0 and term[j])
    return g, term


def critic_values(module: Any, obs: np.ndarray, actions: np.ndarray) -> dict[str, np.ndarray]:
    """Twin mean and min of ``critic`` and ``critic_target`` on the rows ``(n,)`` each."""
    o = torch.as_tensor(obs, dtype=torch.float32).reshape(len(obs), -1)
    a = torch.as_tensor(actions, dtype=torch.float32).reshape(len(obs), -1)
    out = {}
    with torch.no_grad():
        for name in ("critic", "critic_target"):
            q = torch.cat(
                [
                    getattr(module, name)(o[k : k + 4096], a[k : k + 4096])
                    for k in range(0, len(o), 4096)
                ],
                dim=1,
            )
            out[f"{name}_mean"] = q.mean(dim=0).numpy()
            out[f"{name}_min"] = q.min(dim=0).values.numpy()
    return out


def diagnose(ckpt: Path, reward_scale: float, gamma: float) -> dict[str, Any]:
    """Q vs the Monte-Carlo return on one checkpoint's replay (module doc)."""
    from ray.rllib.core.rl_module.rl_module import RLModule

    state = pickle.loads((ckpt / "algorithm_state.pkl").read_bytes())
    data = state[REPLAY_KEY]["data"]
    n = len(data["rewards"])
    obs, next_obs = data["obs"].reshape(n, -1), data["new_obs"].reshape(n, -1)
    terminated = data["terminateds"].astype(bool)
    succ = successors(obs, next_obs, terminated)
    mc, ends_terminal = monte_carlo(reward_scale * data["rewards"], succ, terminated, gamma)
    module = RLModule.from_checkpoint(str(ckpt / MODULE_DIR)).unwrapped()
    q = critic_values(module, obs, data["actions"])
    result = {
        "rows": n,
        "reward_scale": reward_scale,
        "gamma": gamma,
        "scaled_reward_mean": float(reward_scale * data["rewards"].mean()),
        "mc_mean": float(mc.mean()),
        "mc_mean_terminating_segments": float(mc[ends_terminal].mean()),
        "terminating_share": float(ends_terminal.mean()),
        "segments": int((succ < 0).sum()),
    }
    for key, values in q.items():
        result[f"{key}_q"] = float(values.mean())
    result["mc_over_q"] = result["mc_mean"] / result["critic_mean_q"]
    result["corr_q_mc"] = float(np.corrcoef(q["critic_mean"], mc)[0, 1])
    return result


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    runs = {}
    for item in args.checkpoint:
        label, _, path = item.partition("=")
        runs[label] = {"checkpoint": path} | diagnose(
            Path(path).resolve(), args.reward_scale, args.gamma
        )
        print(
            label, {k: round(v, 4) if isinstance(v, float) else v for k, v in runs[label].items()}
        )
    write_result(args.name, {"runs": runs})


if __name__ == "__main__":
    main()
