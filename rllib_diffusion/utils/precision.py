"""Mixed precision of a learner's loss forward: one knob value → one autocast context.

``"fp32"`` (the references' choice) is no context at all; ``"bf16"`` is
``torch.autocast`` to bfloat16 on the device's type (CPU with AMX/AVX512-BF16, CUDA):
matmul-family ops run in bf16, the rest in fp32 (networks return the dtype of their
input, see ``MLP``), so losses, log-probs and targets are reduced in fp32.
No ray import.
"""

from __future__ import annotations

import contextlib

import torch

#: Allowed values of the ``precision`` knob.
PRECISIONS = ("fp32", "bf16")


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """Context running ``device``'s matmuls at ``precision`` (``"fp32"``: unchanged)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}.")
