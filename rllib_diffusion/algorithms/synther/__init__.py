"""SynthER: an unconditional diffusion model over flattened transitions that upsamples an
offline dataset (Lu et al. 2023), trained as an RLlib offline algorithm.

``SynthERConfig`` / ``SynthER`` (algorithm), ``SynthERModule`` (RLModule; learner:
diffusion BC's), :func:`train_generator` and :func:`synthesize` (the
``rllib-diffusion synthesize`` command).
"""

from rllib_diffusion.algorithms.synther.synther import ALGORITHM_NAME, SynthER, SynthERConfig
from rllib_diffusion.algorithms.synther.synthesize import (
    PROVENANCE_KEY,
    SynthERSettings,
    SynthesizeSettings,
    read_provenance,
    synthesize,
    train_generator,
)

__all__ = [
    "ALGORITHM_NAME",
    "PROVENANCE_KEY",
    "SynthER",
    "SynthERConfig",
    "SynthERSettings",
    "SynthesizeSettings",
    "read_provenance",
    "synthesize",
    "train_generator",
]
