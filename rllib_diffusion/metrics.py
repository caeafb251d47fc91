"""The one home for metric names logged by this package's learners and algorithms.

Names follow a ``losses/...``, ``charts/...`` split inside each module's results.
"""

BC_LOSS = "losses/bc_loss"
# Optimizer steps skipped because of NaN/inf gradients (algorithms/finite_gradients.py).
NONFINITE_STEPS_SKIPPED = "nonfinite_grad_steps_skipped"
REPLAY_TRANSITIONS = "replay_transitions"  # transitions held in an off-policy replay (DSRL)

# DPPO learner (per module).
APPROX_KL = "approx_kl"
CLIP_FRACTION = "clip_fraction"
CLIP_FRACTION_PER_STEP = "clip_fraction/k"  # + fine-tuned step index
RATIO_MEAN = "ratio_mean"
EXPLAINED_VARIANCE = "explained_variance"
KL_STOPPED = "kl_early_stopped"
DENOISING_STD = "denoising_std"  # mean exploration std of the fine-tuned steps in the batch
ENTROPY = "entropy"  # mean entropy (rate) of the policy units in the batch (ReinFlow)
BC_REGULARISER = "losses/bc_regulariser"
# DPPO health signals, one value per iteration (see dppo_learner.py).
RATIO_FIRST_MINIBATCH = "ratio_first_minibatch"  # mean ratio before any update: must be 1
RATIO_FIRST_MINIBATCH_MAX_DEV = "ratio_first_minibatch_max_dev"  # max |ratio − 1| there
ACTOR_GRAD_NORM = "actor_grad_norm"  # L2 norm of the actor gradient, mean over minibatches
ACTOR_UPDATE_NORM = "actor_update_norm"  # ||θ_after − θ_before|| of the fine-tuned actor
ACTOR_UPDATE_RELATIVE = "actor_update_relative"  # the same divided by ||θ_before||
ACTOR_STEPS = "actor_steps"  # optimiser steps applied to the actor this iteration
# DPOER's temperature (dpoer_learner.py), per module, the value at the last minibatch.
DPOER_ALPHA = "dpoer_alpha"  # temperature α
DPOER_ENTROPY_ESTIMATE = "dpoer_entropy_estimate"  # the entropy estimate α is trained on
DPOER_TARGET_ENTROPY = "dpoer_target_entropy"  # its target (−Ta·Da by default)
DPOER_MINIBATCHES = "dpoer_minibatches"  # minibatches seen so far (checkpointed)

# DPPO algorithm results (top level of the result dict).
DPPO_NAMESPACE = "dppo"
ENV_STEPS = "env_steps_lifetime"  # true env steps (decisions × executed actions)
# Decisions (action chunks; one step of the chunk env each) sampled so far, top level of
# DPPO's result: RLlib's own ``num_env_steps_sampled_lifetime`` counts true env steps.
DECISIONS_LIFETIME = "num_decisions_sampled_lifetime"
# True env steps sampled in an iteration, summed over EnvRunners (``env_runners/`` of the
# result; DSRL counts them with an ``on_episode_step`` callback).
ENV_STEPS_SAMPLED = "true_env_steps_sampled"
TRAIN_RETURN = "train_return_mean"
TRAIN_NORMALIZED = "train_normalized_score"
EVAL_RETURN = "eval_return_mean"
EVAL_NORMALIZED = "eval_normalized_score"
# True on a progress line whose periodic evaluation was due but recorded no return.
EVAL_MISSING = "eval_missing"
SAMPLE_SECONDS = "sample_seconds"
LEARN_SECONDS = "learn_seconds"
SYNC_SECONDS = "sync_seconds"

# EnvRunner health, every run-loop progress line of a run with remote EnvRunners (from
# RLlib's ``fault_tolerance`` result section), and result.json's placement.
ENV_RUNNERS_HEALTHY = "env_runners_healthy"  # remote EnvRunners healthy after the iteration
ENV_RUNNER_RESTARTS = "env_runner_restarts"  # EnvRunner restarts so far (over resumes too)
RUNNER_STATE = "state"  # of each EnvRunner in result.json["placement"]["env_runners"]
RUNNER_HEALTHY = "healthy"
RUNNER_RESTARTED = "restarted"  # answering, from another process than at the run's start
RUNNER_UNHEALTHY = "unhealthy"  # not answering (down or being restarted)

# Offline actor-critic learners (per module).
ACTOR_LOSS = "losses/actor_loss"
CRITIC_LOSS = "losses/critic_loss"
Q_LOSS = "losses/q_loss"
Q_MEAN = "charts/q_mean"  # Q(s, a) on the data's actions, mean over heads and batch
Q_POLICY_MEAN = "charts/q_policy_mean"  # Q(s, a~π) on the actor's actions
TARGET_MEAN = "charts/target_mean"  # the TD target y
TD_ERROR = "charts/td_error"  # mean |Q(s, a) − y| over heads and batch
VALUE_LOSS = "losses/value_loss"  # IDQL: the expectile loss of V
VALUE_MEAN = "charts/v_mean"  # IDQL: V(s)
DISTILL_LOSS = "losses/distill_loss"
DUAL_ETA = "charts/dual_eta"
Q_WEIGHT = "charts/q_weight"  # TD3+BC: λ = α / mean|Q_1(s, π(s))|

# Reward-weighted fine-tuning (DRWR, DAWR): learner metrics and the algorithm's namespace.
WEIGHT_MEAN = "charts/weight_mean"  # mean regression weight of the minibatch
WEIGHT_AT_MAX = "charts/weight_at_max"  # fraction of the minibatch's weights at max_weight
AWR_NAMESPACE = "reward_weighted"
TRAINED_DECISIONS = "trained_decisions"  # rows the iteration's actor update drew from
BUFFER_DECISIONS = "buffer_decisions"  # decisions held by DAWR's replay buffer

# Action-gradient fine-tuning (DIPO, QSM; namespace: REPLAY_FINETUNE_NAMESPACE).
ACTION_SHIFT = "charts/action_shift"  # DIPO: mean |a_improved − a| of the rows written back
Q_GRAD_NORM = "charts/q_grad_norm"  # QSM: mean ‖∇_a Q(s, a_t)‖ at the noised actions

# Online DQL/IDQL/DIPO/QSM fine-tuning from a pretrained denoiser
# (algorithms/replay_finetune.py): the loop's namespace.
REPLAY_FINETUNE_NAMESPACE = "replay_finetune"
# Online SynthER in that loop (algorithms/synther/online.py).
SYNTHER_POOL_ROWS = "synther_pool_rows"  # synthetic transitions in the pool in use
SYNTHER_RETRAIN_STEP = "synther_retrain_env_step"  # env step of the last generator retrain
SYNTHER_GENERATOR_LOSS = "synther_generator_loss"  # its denoising loss at the end
SYNTHER_SECONDS = "synther_seconds"  # the retrain's wall time (train + generate)
SYNTHER_SKIPPED_STEP = "synther_skipped_env_step"  # a retrain skipped: the last iteration

#: What a Q-learner's progress line, TensorBoard and result.json carry of its learner
#: results, so that a user can see whether the critic has converged (present keys only).
CRITIC_DIAGNOSTICS = (
    ACTOR_LOSS,
    CRITIC_LOSS,
    BC_LOSS,
    Q_LOSS,
    Q_MEAN,
    Q_POLICY_MEAN,
    TARGET_MEAN,
    TD_ERROR,
    VALUE_LOSS,
    VALUE_MEAN,
    DISTILL_LOSS,
    DUAL_ETA,
)


def critic_diagnostics(learner_results: dict) -> dict[str, float]:
    """The :data:`CRITIC_DIAGNOSTICS` of one module's learner results, keyed by the
    metric's last part (``charts/q_mean`` → ``q_mean``)."""
    out = {}
    for key in CRITIC_DIAGNOSTICS:
        value = float_or_none(learner_results.get(key))
        if value is not None:
            out[key.rsplit("/", 1)[-1]] = value
    return out


# Sweep metric (top level of every Tune result of a sweep; see rllib_diffusion.tuning.metric).
SWEEP_NAMESPACE = "sweep"
SWEEP_RETURN = "return_mean"  # last measured return of the sweep's source; NaN before any
SWEEP_RETURN_FRESH = "return_fresh"  # 1.0 measured this iteration, 0.0 carried forward / none
SWEEP_RETURN_ITERATION = "return_iteration"  # iteration it was measured at (0: never)


def float_or_none(v: object) -> float | None:
    """``float(v)``, or None for missing, non-numeric and NaN values (progress lines)."""
    try:
        v = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if v != v else v
