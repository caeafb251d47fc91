"""Code shared by the offline Q-learning algorithms (Diffusion-QL, DAC, IDQL, FQL).

Nothing here knows any one of them: config and algorithm mixins (shared knobs, the
offline training step and the online phase), the diffusion actor-critic module mixin,
and the run driver of ``rllib-diffusion offline``, which looks algorithms up in
:mod:`rllib_diffusion.algorithms.registry`. The algorithms import this package, never
each other.
"""
