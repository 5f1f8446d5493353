"""``kind: llm``: placeholder until the LLM probe lands (issue 3); config parses, probing reports an error."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from probes.base import Outcome, ProbeFailure, ProbeHooks
from probes.options import Fraction, secret


@dataclass(frozen=True, slots=True)
class LlmOptions:
    """Provider, endpoint and key."""

    provider: Literal["openai", "anthropic", "gemini", "openai_compatible"]
    base_url: str | None = None
    api_key: str | None = secret()
    probe: Literal["models", "completion"] = "models"
    model: str | None = None
    min_headroom: Fraction = 0.05


class LlmProbe:
    """Not implemented yet."""

    def __init__(self, options: LlmOptions, timeout: float, hooks: ProbeHooks) -> None:
        self._options = options

    async def check(self) -> Outcome:
        """Always fails: the probe is not written yet."""
        raise ProbeFailure("not_implemented", "the llm probe is not implemented yet")

    async def aclose(self) -> None:
        """Nothing to release."""
