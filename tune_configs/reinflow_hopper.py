"""ReinFlow fine-tuning sweep on Hopper-v5 with ASHA early stopping.

    rllib-diffusion tune tune_configs/reinflow_hopper.py --checkpoint runs/bc_flow/checkpoint \
        --storage-path runs/tune --name reinflow_hopper --num-samples 8

Trainable: ``ReinFlow`` built from a flow DiffusionBC checkpoint
(``rllib-diffusion pretrain --sampler flow --denoising-steps 4``), through the same
``dppo_config_from_pretrained`` as DPPO (``algo="reinflow"``). Searched: actor_lr,
critic_lr and entropy_coeff (``ReinFlowConfig.training``); every Euler step is
fine-tuned, so no K_ft. Metric, ASHA milestones and budget as in ``dppo_hopper.py``.
"""

from __future__ import annotations

from ray import tune

from rllib_diffusion.algorithms.dppo.sweep import dppo_asha_sweep
from rllib_diffusion.tuning import SweepArgs, TuneSweep

ENV_ID = "Hopper-v5"


def make_sweep(args: SweepArgs) -> TuneSweep:
    return dppo_asha_sweep(
        args,
        env_id=ENV_ID,
        algo="reinflow",
        search=dict(
            actor_lr=tune.loguniform(1e-5, 2e-4),
            critic_lr=tune.loguniform(2e-4, 2e-3),
            entropy_coeff=tune.choice([0.0, 0.01, 0.03]),
        ),
    )
