"""The container tests' image: built (or reused) once per session by scripts/image.

If podman cannot run here, every container test fails with one line naming what is
missing: they are part of the suite, never skipped.
"""

from __future__ import annotations

import time

import pytest
from stripe_bridge_testing.podman import missing_requirement, scripts_image


@pytest.fixture(scope="session")
def function_image() -> str:
    """localhost/stripe-bridge:<version>, built from this checkout."""
    missing = missing_requirement()
    if missing:
        pytest.fail(missing, pytrace=False)
    start = time.monotonic()
    image = scripts_image()
    print(f"\n{image} ready in {time.monotonic() - start:.1f} s")
    return image
