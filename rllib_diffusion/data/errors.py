"""The one exception type of the dataset layer."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset (or a request for one) is missing, malformed or does not fit the task.

    Every message names the problem *and* the fix, e.g. which argument to pass or which
    command creates the missing dataset. Subclasses ``ValueError`` so that generic
    ``except ValueError`` handlers (and RLlib's config validation) still catch it.
    """
