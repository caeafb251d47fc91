"""RLlib's SAC learner, with its temperature in the learner state.

RLlib 2.60's ``SACLearner`` keeps ``log α`` in ``curr_log_alpha`` but leaves it out of
``get_state``: a restored run would start again from ``initial_alpha`` while its
temperature optimiser state is restored. DSRL's resume must continue the temperature.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from ray.rllib.algorithms.sac.torch.sac_torch_learner import SACTorchLearner
from ray.rllib.utils.annotations import override

#: Learner-state key of ``{module_id: log α}``.
LOG_ALPHA = "dsrl_log_alpha"


class DSRLTorchLearner(SACTorchLearner):
    """``SACTorchLearner`` whose state includes ``log α`` per module."""

    @override(SACTorchLearner)
    def get_state(
        self,
        components: str | Collection[str] | None = None,
        *,
        not_components: str | Collection[str] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        state = super().get_state(components, not_components=not_components, **kwargs)
        if self._check_component(LOG_ALPHA, components, not_components):
            state[LOG_ALPHA] = {
                mid: float(value.detach().cpu().reshape(-1)[0])
                for mid, value in self.curr_log_alpha.items()
            }
        return state

    @override(SACTorchLearner)
    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        for mid, value in state.get(LOG_ALPHA, {}).items():
            # In place: the temperature optimiser holds this tensor.
            self.curr_log_alpha[mid].data.fill_(value)
