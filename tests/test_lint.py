"""The linter, the formatter and the type checker, as part of the suite: ruff and mypy with
the project's settings (pyproject.toml), no blanket ignores."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["resnet_batch", "tests", "bench", "examples", "jobs"]


@pytest.mark.parametrize(
    "command",
    [["ruff", "check", *SOURCES], ["ruff", "format", "--check", *SOURCES], ["mypy"]],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_lint_and_types(command):
    result = subprocess.run([sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]


def test_no_blanket_ignores():
    """Every suppression names what it suppresses."""
    blanket = []
    for path in sorted(p for folder in SOURCES for p in (ROOT / folder).rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if ("# noqa" in line and "# noqa:" not in line) or ("# type: ignore" in line and "ignore[" not in line):
                blanket.append(f"{path.relative_to(ROOT)}:{number}")
    text = (ROOT / "pyproject.toml").read_text()
    assert not blanket and "ignore_errors" not in text and "disable_error_code" not in text, blanket


def test_a_test_outside_the_e2e_tier_that_starts_ray_fails(tmp_path, monkeypatch):
    """The fast tier's guard (tests/tiers.py): a new Ray session folder during the test fails it."""
    from tests.tiers import ray_sessions, refuse_new_sessions

    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    before = ray_sessions()
    refuse_new_sessions(before)  # nothing started: passes
    (tmp_path / "ray" / "session_2026-12-07_15-00-00_1").mkdir(parents=True)
    with pytest.raises(pytest.fail.Exception, match="outside the e2e tier"):
        refuse_new_sessions(before)
