"""Scripted multimodal Avoid demonstrations as a Minari dataset (also for `ray job submit --
python experiments/avoid_demos.py ...`).

Run with --help for the flags; they are those of ``python -m rllib_diffusion.collect.avoid_demos``.
"""

from __future__ import annotations

import sys

from rllib_diffusion.collect.avoid_demos import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
