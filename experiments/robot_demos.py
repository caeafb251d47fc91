"""Scripted robomimic-format demos for Lift / Can / Square / Transport (robosuite), as a script.

    python experiments/robot_demos.py --task lift --episodes 50 --out data/robot/lift_scripted.hdf5

Flags: see --help; the code is rllib_diffusion.collect.robot_demos.
"""

from __future__ import annotations

import sys

from rllib_diffusion.collect.robot_demos import main

if __name__ == "__main__":
    sys.exit(main())
