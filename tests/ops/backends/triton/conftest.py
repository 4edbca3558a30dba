"""Fixtures of the Triton backend tests."""

from __future__ import annotations

import pytest

from tests.ops.utils import poison_uninitialized


@pytest.fixture
def poison_kernel_outputs():
    """NaN-fill (integers: int max) every buffer torch allocates uninitialised during the test, the
    kernels' outputs included, so an element a kernel forgets to write fails the comparison."""
    with poison_uninitialized():
        yield
