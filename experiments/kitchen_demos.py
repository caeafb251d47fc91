"""Scripted Franka Kitchen demos (microwave, light switch, slide cabinet), as a script.

    python experiments/kitchen_demos.py --tasks microwave light_switch --episodes 50 \
        --dataset-id local/kitchen/scripted-v0

Flags: see --help; the code is rllib_diffusion.collect.kitchen_demos.
"""

from __future__ import annotations

import sys

from rllib_diffusion.collect.kitchen_demos import main

if __name__ == "__main__":
    sys.exit(main())
