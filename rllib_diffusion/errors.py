"""Exceptions that signal bad user input (shown as one line by the CLI, no traceback)."""

from __future__ import annotations

from rllib_diffusion.checkpoints import CheckpointError
from rllib_diffusion.data.errors import DatasetError
from rllib_diffusion.modules.model_config import ConfigError

#: Caught by the CLI and printed as ``error: <message>``.
USER_ERRORS: tuple[type[Exception], ...] = (
    DatasetError,
    CheckpointError,
    ConfigError,
    FileNotFoundError,
)

__all__ = ["USER_ERRORS", "CheckpointError", "ConfigError", "DatasetError"]
