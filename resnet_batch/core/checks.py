"""The checks of argument values, one wording for every command: a bad value is one line
that names the flag, what it takes, and what it got."""

from __future__ import annotations

from collections.abc import Sequence

from .errors import UsageError


def one_of(flag: str, value: object, valid: Sequence[str]) -> None:
    if value not in valid:
        raise UsageError(f"invalid {flag} {value!r}; valid: {', '.join(valid)}")


def whole_number(flag: str, value: object, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise UsageError(f"{flag} must be an integer >= {minimum}, got {value!r}")


def whole_number_or_auto(flag: str, value: object) -> None:
    """None is "automatic" (the flag left out); a given value is a whole number >= 1."""
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise UsageError(f"{flag} must be an integer >= 1 (leave it out for the automatic value), got {value!r}")


def seconds(flag: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise UsageError(f"{flag} must be a number of seconds > 0, got {value!r}")


def fraction(flag: str, value: object, what: str = "fraction", allow_zero: bool = False) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not 0 <= value <= 1
        or (value == 0 and not allow_zero)
    ):
        raise UsageError(f"{flag} must be a {what} in {'[' if allow_zero else '('}0, 1], got {value!r}")
