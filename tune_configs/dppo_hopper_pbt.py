"""DPPO fine-tuning on Hopper-v5 with Population Based Training of actor_lr and clip.

    rllib-diffusion tune tune_configs/dppo_hopper_pbt.py --checkpoint runs/pretrain/checkpoint \
        --storage-path runs/tune --name dppo_hopper_pbt --num-samples 4

All trials run the whole budget. Every ``perturbation_interval`` iterations the bottom
25% of trials (by ``env_runners/episode_return_mean``) copy the checkpoint of a top-25%
trial and continue with perturbed ``actor_lr`` (×0.8 / ×1.2 or resampled) and
``clip_param`` (a neighbour in the list or resampled). Keys are ``DPPOConfig.to_dict()``
names. A mutated actor_lr takes effect after the restored trial's first update (the
learner's lr schedule is rebuilt from the new config).
"""

from __future__ import annotations

from ray import tune
from ray.tune.schedulers import PopulationBasedTraining

from rllib_diffusion import metrics as M
from rllib_diffusion.algorithms.dppo import DPPO
from rllib_diffusion.tuning import (
    DPPO_ENV_STEPS,
    EVAL_RETURN,
    TRAIN_RETURN,
    SweepArgs,
    TuneSweep,
    dppo_checkpoint_meta,
    dppo_sweep_config,
    learner_metric,
)

ENV_ID = "Hopper-v5"
METRIC = TRAIN_RETURN
MAX_ITERATIONS = 100
NUM_SAMPLES = 4
CLIPS = [0.005, 0.01, 0.02, 0.05]


def make_sweep(args: SweepArgs) -> TuneSweep:
    max_t = args.max_iterations or MAX_ITERATIONS
    interval = max(1, max_t // 10)
    config, settings = dppo_sweep_config(
        args, env_id=ENV_ID, eval_interval=10, eval_episodes=10, checkpoint_interval=interval
    )
    config.training(actor_lr=tune.loguniform(1e-5, 3e-4), clip_param=tune.choice(CLIPS))
    return TuneSweep(
        trainable=DPPO,
        param_space=config,
        metric=METRIC,
        mode="max",
        scheduler=PopulationBasedTraining(
            time_attr="training_iteration",
            perturbation_interval=interval,
            burn_in_period=interval,
            hyperparam_mutations={
                "actor_lr": tune.loguniform(1e-5, 3e-4),
                "clip_param": CLIPS,
            },
            quantile_fraction=0.25,
            resample_probability=0.25,
        ),
        num_samples=args.num_samples or NUM_SAMPLES,
        stop={"training_iteration": max_t},
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=4, checkpoint_frequency=interval, checkpoint_at_end=True
        ),
        checkpoint_meta=dppo_checkpoint_meta(settings),
        report_metrics=[EVAL_RETURN, DPPO_ENV_STEPS, learner_metric(M.APPROX_KL)],
        description=f"DPPO on {ENV_ID}, PBT of actor_lr and clip_param",
    )
