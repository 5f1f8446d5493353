"""Typed declarations for a dependency kind's settings.

Each kind declares its options as a frozen dataclass; ``daemon.config`` reads the type hints below to parse
and validate the YAML (durations, percentages, choices, secrets), so a kind adds settings by adding fields.
"""

from __future__ import annotations

from dataclasses import field
from typing import Annotated, Any

DURATION = "duration"
FRACTION = "fraction"
SECRET = "secret"  # noqa: S105 - the name of a metadata flag, not a password

Duration = Annotated[float, DURATION]  # "250ms", "2s", "5m" or a number of seconds
Fraction = Annotated[float, FRACTION]  # "5%" or a number from 0 to 1


def secret(default: Any = None) -> Any:
    """A field whose value must never be echoed (API keys, tokens); it is redacted everywhere."""
    return field(default=default, metadata={SECRET: True})

