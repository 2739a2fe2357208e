"""Fixtures shared by the test modules."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    """A freshly seeded numpy generator, so every test draws the same numbers."""
    return np.random.default_rng(0)
