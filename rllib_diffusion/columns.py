"""The one home for batch-column and dataset-column names used across the package."""

# RLlib's standard columns are used under their RLlib names (``Columns.OBS`` ...);
# these are the extra keys this package adds.

#: Parquet columns written for RLlib's offline API (windowed, normalised samples).
OBS = "obs"  # (To * Do,) normalised observation history, flattened
ACTIONS = "actions"  # (Ta, Da) normalised action chunk
REWARDS = "rewards"
NEXT_OBS = "new_obs"
TERMINATEDS = "terminateds"

#: Extra model outputs of diffusion modules.
CHAINS = "chains"  # (B, K_ft + 1, Ta, Da) fine-tuned part of the denoising chain
CHAIN_LOGP = "chain_logp"  # (B, K_ft) per-denoising-step log-probs

#: Learner batch column of DRWR: per-row weight of the denoising loss.
SAMPLE_WEIGHTS = "sample_weights"  # (B,)
