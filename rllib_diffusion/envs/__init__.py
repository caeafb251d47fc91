"""Gymnasium wrappers (action chunks, normalisation), task tables and a toy task."""

from rllib_diffusion.envs.avoid import register as _register_avoid
from rllib_diffusion.envs.robosuite_tasks import register as _register_robot_tasks
from rllib_diffusion.envs.toy import register as _register_toy

# Registered on import so that EnvRunner processes (which import the chunk-env creator
# from this package) can make them too. The robomimic ids import robosuite only when made.
_register_toy()
_register_robot_tasks()
_register_avoid()
