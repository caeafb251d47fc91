"""The one home for metric names logged by this package's learners and algorithms.

Names follow a ``losses/...``, ``charts/...`` split inside each module's results.
"""

BC_LOSS = "losses/bc_loss"
GRAD_STEPS = "charts/gradient_steps"

#: Evaluation results (returned in ``result["evaluation"]`` by our own evaluators).
EVAL_RETURN_MEAN = "episode_return_mean"
EVAL_RETURN_STD = "episode_return_std"
EVAL_NORMALIZED_SCORE = "normalized_score"
