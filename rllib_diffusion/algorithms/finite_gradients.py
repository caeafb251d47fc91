"""NaN/inf safety of a gradient step at one host sync per optimizer, shared above the
families by the learners of diffusion BC, SynthER and the offline Q-learners.

RLlib 2.60's ``TorchLearner.apply_gradients`` checks ``torch.isfinite(g).all()`` for every
parameter, twice per step (≈ 3 ms, 12–14 % of a diffusion-BC step on one CPU thread, and
2 host syncs per parameter on a GPU), unless ``config.torch_skip_nan_gradients`` is True
— and then it checks nothing at all: despite its docstring ("skips updates in the
optimizer entirely if they contain any nan gradient"), the optimizer steps on NaN
gradients and the weights become NaN.

Our configs set ``torch_skip_nan_gradients=True`` and :class:`SkipNonFiniteStepsMixin`
does what that setting documents: an optimizer whose gradients hold any NaN/inf takes no
step this time (its gradients are dropped, its weights and moment estimates stay as they
were; the other optimizers of the module step as usual). Each skipped step is counted in
the module's ``nonfinite_grad_steps_skipped`` metric and logged as a warning. A user who
sets ``torch_skip_nan_gradients=False`` gets RLlib's own behaviour back (non-finite
entries zeroed by ``nan_to_num``, then the step, at RLlib's cost).
"""

from __future__ import annotations

import logging
from typing import Any

from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.utils.annotations import override

from rllib_diffusion import metrics as M
from rllib_diffusion.utils.optim import all_finite

logger = logging.getLogger(__name__)


class SkipNonFiniteStepsMixin:
    """Host: a ``TorchLearner`` (``class L(SkipNonFiniteStepsMixin, ..., TorchLearner)``)
    whose config sets ``torch_skip_nan_gradients=True`` (see the module docstring)."""

    @override(TorchLearner)
    def postprocess_gradients(self, gradients_dict: dict[Any, Any]) -> dict[Any, Any]:
        grads = super().postprocess_gradients(gradients_dict)
        if not self.config.torch_skip_nan_gradients:
            return grads  # RLlib's per-parameter check in apply_gradients runs instead
        for module_id in self.module.keys():
            for name, optim in self.get_optimizers_for_module(module_id):
                own = self.filter_param_dict_for_optimizer(grads, optim)
                if all_finite(own.values()):
                    continue
                logger.warning(
                    "Non-finite (NaN/inf) gradients for optimizer %r of module %r: this "
                    "optimizer skips its step.",
                    name,
                    module_id,
                )
                self.metrics.log_value((module_id, M.NONFINITE_STEPS_SKIPPED), 1, reduce="sum")
                for ref in own:
                    del grads[ref]
                optim.zero_grad(set_to_none=True)  # no step for parameters without grads
        return grads
