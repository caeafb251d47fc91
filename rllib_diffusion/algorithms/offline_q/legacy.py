"""Pre-redesign checkpoints of the offline Q-learners.

Before the registry, Diffusion-QL, IDQL and DAC shared one module class,
``diffusion_ql.diffusion_ql_rl_module.DiffusionQLModule``, which carried IDQL's value
net (``value_network=True`` in its model config) and DAC's dual variable; checkpoints
pickled that class. Their model config (which always has ``value_network``) tells which
algorithm wrote them: only IDQL built the value net, only DAC combined the critic heads
by their mean.
"""

from __future__ import annotations

from typing import Any


def legacy_algorithm(model_config: dict[str, Any] | None) -> str | None:
    """Registry name of the algorithm a pre-redesign shared-module config belongs to
    (None: Diffusion-QL's own, or not a legacy config)."""
    # Every pre-redesign config has ``value_network``; today's configs never do.
    if not model_config or "value_network" not in model_config:
        return None
    if model_config["value_network"]:
        return "idql"
    if model_config.get("q_aggregation") == "mean":
        return "dac"
    return None


def legacy_module_class(model_config: dict[str, Any] | None) -> type | None:
    """The module class that now owns a legacy config's state (via the registry)."""
    from rllib_diffusion.algorithms import registry

    name = legacy_algorithm(model_config)
    if name is None:
        return None
    return registry.get(name).config_class().get_default_rl_module_spec().module_class
