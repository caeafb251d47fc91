"""Model config of algorithms that fine-tune a pretrained DDPM/DDIM denoiser in place
(DRWR/DAWR in ``awr/``, DIPO/QSM in ``qgrad/``): the pretrained policy and the std floor
of its exploring reverse steps. Each family's model configs extend it with their own
networks; its ``Attributes:`` docs feed ``finetune --help`` for all of them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from rllib_diffusion.knobs import PositiveFloat, check_ranges
from rllib_diffusion.modules.model_config import ConfigError, DiffusionPolicyConfig


@dataclass
class FinetunedDenoiserConfig:
    """A pretrained ε-prediction denoiser, fine-tuned in place.

    Attributes:
        policy: the pretrained policy's :class:`DiffusionPolicyConfig` dict ("ddpm" or
            "ddim" sampler: an ε-prediction denoiser).
        min_sampling_std: std floor of every reverse step of the rollouts (and of any TD
            target's next actions) (reference ``min_sampling_denoising_std`` 0.1).
    """

    #: Names of the algorithms, for messages (e.g. ``"DIPO/QSM"``).
    ALGOS: ClassVar[str] = "this algorithm"

    policy: dict[str, Any]
    min_sampling_std: PositiveFloat = 0.1

    def __post_init__(self) -> None:
        for f in fields(self):
            if isinstance(getattr(self, f.name), list):
                setattr(self, f.name, tuple(getattr(self, f.name)))
        check_ranges(self)
        sampler = self.policy_config.sampler
        if sampler not in ("ddpm", "ddim"):
            raise ConfigError(
                f"{self.ALGOS} fine-tune DDPM or DDIM policies; the pretrained sampler is "
                f"{sampler!r}. Pretrain with --sampler ddpm."
            )

    @property
    def policy_config(self) -> DiffusionPolicyConfig:
        return DiffusionPolicyConfig.from_dict(self.policy, strict=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (tuples as lists), as stored in checkpoints."""
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @staticmethod
    def pick(d: dict[str, Any], target: type) -> Any:
        """``target`` built from the entries of ``d`` that are its fields."""
        known = {f.name for f in fields(target)}
        return target(**{k: v for k, v in d.items() if k in known})
