"""System tests reuse the tiny dataset / pretrained-policy fixtures of the algorithm tests."""

from tests.algorithms.conftest import pretrained, tiny_dataset  # noqa: F401
