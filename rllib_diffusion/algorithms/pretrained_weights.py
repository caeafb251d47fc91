"""Loading a pretrained diffusion BC denoiser into a fine-tuning algorithm: one
implementation for every family that starts from a ``DiffusionBC`` checkpoint (DPPO and
its chain-PPO siblings, DRWR/DAWR, DIPO/QSM, online DQL/IDQL).

``load_pretrained_into`` checks the checkpoint's policy config against the algorithm's
(every mismatching field named in one error), copies the EMA denoiser into each
learner's module through its ``load_pretrained_denoiser``, pushes the weights to the
EnvRunners (blocking) and verifies that every runner acts with them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from rllib_diffusion.checkpoints import CheckpointError

#: ``check(pretrained_policy_config, our_policy_config, where)``: raises on a mismatch.
PolicyCheck = Callable[[dict[str, Any], dict[str, Any], str], None]


def check_fields(
    pretrained: dict[str, Any],
    ours: dict[str, Any],
    where: str,
    *,
    fields: Sequence[str],
    owner: str,
    fix: str,
) -> None:
    """Raise one ``CheckpointError`` naming every field of ``fields`` whose value differs
    between the pretrained checkpoint's policy config and ours (tuples equal lists)."""
    diffs = [
        f"{name}: checkpoint {pretrained.get(name)!r} vs {owner} {ours.get(name)!r}"
        for name in fields
        if _norm(pretrained.get(name)) != _norm(ours.get(name))
    ]
    if diffs:
        raise CheckpointError(
            f"Pretrained checkpoint '{where}' does not match the {owner} policy config: "
            + "; ".join(diffs)
            + f". {fix}"
        )


def load_pretrained_into(algo: Any, checkpoint: str | Path, check: PolicyCheck) -> None:
    """Copy the EMA denoiser of the DiffusionBC ``checkpoint`` into every learner's module
    and every EnvRunner (``check`` validates the policy configs first)."""
    from ray.rllib.core import DEFAULT_MODULE_ID

    from rllib_diffusion.checkpoints import load_policy_module

    bc_module, meta = load_policy_module(checkpoint, expect_algorithms=("DiffusionBC",))
    check(meta.policy_config, algo.config.model_config["policy"], str(checkpoint))
    state = {k: v.detach().cpu() for k, v in bc_module.ema_net.state_dict().items()}

    def _load(learner: Any) -> None:
        learner.module[DEFAULT_MODULE_ID].unwrapped().load_pretrained_denoiser(state)

    algo.learner_group.foreach_learner(_load)
    expected = checksum(state.values())
    for group in (algo.env_runner_group, algo.eval_env_runner_group):
        if group is not None:
            _sync_and_verify(group, algo.learner_group, expected)


def _sync_and_verify(group: Any, learner_group: Any, expected: float) -> None:
    # sync_weights is fire-and-forget by default and skips runners with a request in
    # flight: block, then verify every runner acts with the pretrained weights.
    group.sync_weights(
        from_worker_or_learner_group=learner_group, inference_only=True, timeout_seconds=60.0
    )
    sums = group.foreach_env_runner(
        lambda runner: checksum(policy_module(runner.module).actor.state_dict().values())
    )
    if any(abs(x - expected) > 1e-6 * max(1.0, abs(expected)) for x in sums):
        raise RuntimeError(
            f"Pretrained weights did not reach every EnvRunner (checksums {sums} vs "
            f"{expected}); retry, or raise the EnvRunners' request limits."
        )


def policy_module(module: Any) -> Any:
    """The policy module inside an EnvRunner's (Multi)RLModule."""
    from ray.rllib.core import DEFAULT_MODULE_ID

    return module if hasattr(module, "actor") else module[DEFAULT_MODULE_ID]


def checksum(tensors: Iterable[Any]) -> float:
    """Sum of every element, in float64: equal weights give equal sums."""
    return float(sum(t.detach().double().sum().item() for t in tensors))


def _norm(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
