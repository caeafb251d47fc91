"""Restoring offline algorithms that run without EnvRunners (shared by every family).

RLlib 2.60's ``Algorithm.restore_from_path`` syncs weights to the EnvRunnerGroup
unconditionally; an offline run without periodic evaluation has none, so the restore
fails. Mixed in before RLlib's ``BC``: ``<Algo>(OfflineRestoreMixin, BC)``.
"""

from __future__ import annotations

from ray.rllib.utils.checkpoints import Checkpointable


class OfflineRestoreMixin:
    """``restore_from_path`` that works with or without an EnvRunnerGroup."""

    def restore_from_path(self, path, *args, **kwargs) -> None:
        if self.env_runner_group is not None:
            return super().restore_from_path(path, *args, **kwargs)
        Checkpointable.restore_from_path(self, path, *args, **kwargs)
        if self.eval_env_runner_group is not None:
            self.eval_env_runner_group.sync_weights(
                from_worker_or_learner_group=self.learner_group, inference_only=True
            )
