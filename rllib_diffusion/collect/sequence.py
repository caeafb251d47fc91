"""The policies a behaviour learner went through, in training order (D4RL's medium-replay).

D4RL's ``medium-replay`` is every sample the behaviour learner saw until it reached the
medium level. ``rllib-diffusion train-behavior`` keeps a checkpoint every few PPO
iterations and lists them, with their training return, in ``<out>/checkpoints.json``.
:func:`policy_sequence` picks the checkpoints from the first one up to the first that
reaches ``until_return``; the collector then records an equal share of the data with each
of them, in that order (PPO samples an equal number of env steps per iteration, so equal
shares follow the learner's own sampling).

Everything here reads JSON only (no Ray), so bad input is refused before any policy loads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rllib_diffusion.modules.model_config import ConfigError

#: The index file ``train-behavior`` writes into its ``--out`` directory.
CHECKPOINT_INDEX = "checkpoints.json"


@dataclass(frozen=True)
class PolicySequenceSettings:
    """Collect with every checkpoint of a behaviour run, in training order (medium-replay).

    Attributes:
        policy_sequence: a ``train-behavior --out`` directory; collect an equal share of
            --num-steps (or --num-episodes) with each of its checkpoints in training
            order, instead of one --policy (D4RL's medium-replay)
        until_return: the last checkpoint of --policy-sequence is the first whose training
            return reaches this (the medium policy's return); None uses every checkpoint
    """

    policy_sequence: str | None = None
    until_return: float | None = None

    def check(self, policy: str | None) -> None:
        """One-line ``ConfigError`` for flags that do not go together."""
        if self.policy_sequence is None and self.until_return is not None:
            raise ConfigError(
                "--until-return needs --policy-sequence RUN_DIR (a train-behavior --out dir)."
            )
        if self.policy_sequence is not None and policy is not None:
            raise ConfigError(
                f"give either --policy ({policy}) or --policy-sequence "
                f"({self.policy_sequence}), not both."
            )


@dataclass(frozen=True)
class SequenceStep:
    """One checkpoint of a behaviour run (an entry of ``checkpoints.json``)."""

    path: str
    iteration: int
    env_steps: int
    training_return: float


def read_run_index(run_dir: str | Path) -> dict[str, Any]:
    """``run_dir/checkpoints.json``; a one-line ``ConfigError`` when there is none."""
    index = Path(run_dir).expanduser() / CHECKPOINT_INDEX
    if not index.is_file():
        raise ConfigError(
            f"--policy-sequence '{run_dir}' has no {CHECKPOINT_INDEX}; pass the --out "
            "directory of `rllib-diffusion train-behavior`."
        )
    try:
        return json.loads(index.read_text())
    except ValueError as err:
        raise ConfigError(f"{index} is not valid JSON ({err}); re-run train-behavior.") from err


def policy_sequence(
    run_dir: str | Path, until_return: float | None, *, env_id: str
) -> list[SequenceStep]:
    """The checkpoints of behaviour run ``run_dir`` in training order, up to and including
    the first whose training return reaches ``until_return`` (all of them for None).

    Raises:
        ConfigError: no index, a run of another env, a listed checkpoint that is gone, or
            no checkpoint reaching ``until_return`` (naming the best one).
    """
    index = read_run_index(run_dir)
    if index.get("env_id") != env_id:
        raise ConfigError(
            f"--policy-sequence '{run_dir}' trained on {index.get('env_id')}, not on --env "
            f"{env_id}; pass --env {index.get('env_id')} or another run."
        )
    steps = sorted(
        (
            SequenceStep(c["path"], int(c["iteration"]), int(c["env_steps"]), float(c["return"]))
            for c in index.get("checkpoints", [])
        ),
        key=lambda s: s.iteration,
    )
    if not steps:
        raise ConfigError(f"--policy-sequence '{run_dir}' lists no checkpoints yet.")
    if until_return is not None:
        reached = [i for i, s in enumerate(steps) if s.training_return >= until_return]
        if not reached:
            best = max(steps, key=lambda s: s.training_return)
            raise ConfigError(
                f"no checkpoint of '{run_dir}' reaches --until-return {until_return:g} (best: "
                f"{best.training_return:.1f} at {Path(best.path).name}); lower it or train longer."
            )
        steps = steps[: reached[0] + 1]
    gone = [s.path for s in steps if not Path(s.path).is_dir()]
    if gone:
        raise ConfigError(
            f"{len(gone)} checkpoint(s) listed in '{run_dir}/{CHECKPOINT_INDEX}' are missing "
            f"(first: {gone[0]}); the run directory was moved or pruned."
        )
    return steps


def equal_shares(total: int, parts: int, *, flag: str) -> list[int]:
    """``total`` split into ``parts`` near-equal positive shares (earlier ones get the
    remainder); a one-line ``ConfigError`` when ``total < parts``."""
    if total < parts:
        raise ConfigError(
            f"{flag} {total} is fewer than the {parts} checkpoints of --policy-sequence; "
            f"give at least {parts}."
        )
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def training_record(checkpoint: str | Path) -> SequenceStep | None:
    """The ``checkpoints.json`` entry of ``checkpoint`` in its run directory (iteration,
    env steps, training return), or None for a checkpoint outside a behaviour run."""
    path = Path(checkpoint).expanduser().resolve()
    try:
        entries = read_run_index(path.parent).get("checkpoints", [])
    except ConfigError:
        return None
    found = next((c for c in entries if Path(c["path"]).name == path.name), None)
    if found is None:
        return None
    return SequenceStep(str(path), found["iteration"], found["env_steps"], found["return"])
