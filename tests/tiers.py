"""The test tiers' one rule the suite checks as it runs: only the e2e tier starts Ray."""

from __future__ import annotations

import os
import tempfile

import pytest


def ray_sessions() -> set[str]:
    """The Ray sessions on this machine: each Ray started here, by this process or another,
    makes a folder of its own under Ray's temporary root."""
    root = os.path.join(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir(), "ray")
    try:
        return {name for name in os.listdir(root) if name.startswith("session_") and name != "session_latest"}
    except OSError:
        return set()


def refuse_new_sessions(before: set[str]) -> None:
    """Fail a test outside the e2e tier that started a Ray."""
    started = ray_sessions() - before
    if started:
        pytest.fail(
            f"this test started Ray ({', '.join(sorted(started))}) outside the e2e tier: "
            "mark its module with pytestmark = pytest.mark.e2e"
        )
