"""rllib-diffusion: diffusion and flow policies as first-class citizens of Ray RLlib.

Sub-packages:
    diffusion   pure-torch diffusion/flow math and networks (no ``ray`` import)
    data        datasets: Minari / npz import, chunk windows, normalisation, ray.data
    envs        gymnasium wrappers (action chunks, normalisation) and task helpers
    modules     RLlib RLModules wrapping the diffusion core
    algorithms  RLlib Algorithms (diffusion BC, DPPO, ...)
"""

__version__ = "0.1.0"
