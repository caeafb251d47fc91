"""The tiny dataset / pretrained-policy fixtures live in tests/conftest.py (shared with
the system tests, so they are built once per session)."""

from tests.conftest import TINY  # noqa: F401  (imported by the algorithm tests)
