"""Shared fixtures: the read-only data folder beside the checkout, and a real Redis server."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` resolved from the repo root; tests that need it skip where it is truly absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DATA} (it sits beside the checkout)")
    return SHARED_DATA
