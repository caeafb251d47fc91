"""The one home for metric names logged by this package's learners and algorithms.

Names follow a ``losses/...``, ``charts/...`` split inside each module's results.
"""

BC_LOSS = "losses/bc_loss"

# DPPO learner (per module).
APPROX_KL = "approx_kl"
CLIP_FRACTION = "clip_fraction"
CLIP_FRACTION_PER_STEP = "clip_fraction/k"  # + fine-tuned step index
RATIO_MEAN = "ratio_mean"
EXPLAINED_VARIANCE = "explained_variance"
KL_STOPPED = "kl_early_stopped"
DENOISING_STD = "denoising_std"  # mean exploration std of the fine-tuned steps in the batch
BC_REGULARISER = "losses/bc_regulariser"

# DPPO algorithm results (top level of the result dict).
DPPO_NAMESPACE = "dppo"
ENV_STEPS = "env_steps_lifetime"  # true env steps (decisions × executed actions)
TRAIN_RETURN = "train_return_mean"
TRAIN_NORMALIZED = "train_normalized_score"
EVAL_RETURN = "eval_return_mean"
EVAL_NORMALIZED = "eval_normalized_score"
SAMPLE_SECONDS = "sample_seconds"
LEARN_SECONDS = "learn_seconds"
SYNC_SECONDS = "sync_seconds"

# Offline actor-critic learners (per module).
ACTOR_LOSS = "losses/actor_loss"
CRITIC_LOSS = "losses/critic_loss"
Q_LOSS = "losses/q_loss"
Q_MEAN = "charts/q_mean"
TARGET_MEAN = "charts/target_mean"
VALUE_LOSS = "losses/value_loss"
DISTILL_LOSS = "losses/distill_loss"
DUAL_ETA = "charts/dual_eta"


def float_or_none(v: object) -> float | None:
    """``float(v)``, or None for missing, non-numeric and NaN values (progress lines)."""
    try:
        v = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if v != v else v
