"""IO towards dependencies: one module per kind, one shape (``probes.base.Probe``).

``KINDS`` maps a dependency ``kind`` to its options class and its factory; config validation and the
daemon both use it, so a kind exists in exactly one place.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from failsoft.probes import http, llm, postgres, redis, tcp
from failsoft.probes.base import Probe, ProbeHooks


@dataclass(frozen=True, slots=True)
class Kind:
    """A dependency kind: how its options look and how to build its probe."""

    options: type[Any]
    create: Callable[[Any, float, ProbeHooks], Probe]  # (options, timeout seconds, hooks) -> probe


KINDS: Mapping[str, Kind] = {
    "postgres": Kind(postgres.PostgresOptions, postgres.PostgresProbe),
    "redis": Kind(redis.RedisOptions, redis.RedisProbe),
    "http": Kind(http.HttpOptions, http.HttpProbe),
    "tcp": Kind(tcp.TcpOptions, tcp.TcpProbe),
    "llm": Kind(llm.LlmOptions, llm.LlmProbe),
}
