"""Warnings about a valid config that is probably not what was meant (check-config prints them, ``run`` logs them).

They are not errors: a gateway may really serve the OpenAI API without ``/v1``. But a wrong base URL fails only
at the first probe, as a ``misconfigured`` 404 that looks like an outage; saying it at check-config time is cheaper.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

# What each provider's probe appends to base_url (probes/llm.py builds the same paths, as the official SDKs do).
_APPENDS = {"openai": "/models", "openai_compatible": "/models", "anthropic": "/v1/models", "gemini": "/v1beta/models"}
_ENDPOINTS = ("/models", "/chat/completions", "/completions", "/messages", "/responses", ":generateContent")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def base_url_warnings(name: str, provider: str, base_url: str, has_key: bool) -> list[str]:
    """What looks wrong in one llm dependency's ``base_url`` (empty when nothing does)."""
    path = f"dependencies.{name}.base_url"
    url = urlsplit(base_url)
    route = url.path.rstrip("/")
    probe = base_url.rstrip("/") + _APPENDS.get(provider, "/models")
    out = []
    if route.endswith(_ENDPOINTS):
        out.append(f"{path}: {base_url} looks like an endpoint, not a base URL: the probe requests {probe}")
    elif provider in ("openai", "openai_compatible") and not any(p.startswith("v") and p[1:2].isdigit()
                                                                 for p in route.split("/")):
        out.append(f"{path}: {base_url} has no /v1: OpenAI-compatible servers answer under /v1, and the probe "
                   f"requests {probe} (write {base_url.rstrip('/')}/v1 unless this server really has no /v1)")
    elif provider == "anthropic" and route.endswith("/v1"):
        out.append(f"{path}: {base_url} ends in /v1, which the probe adds itself: it requests {probe} "
                   f"(write {base_url.rstrip('/')[: -len('/v1')]})")
    elif provider == "gemini" and route.endswith(("/v1", "/v1beta")):
        out.append(f"{path}: {base_url} ends in a version, which the probe adds itself: it requests {probe}")
    if url.query or url.fragment:
        out.append(f"{path}: {base_url} has a query or fragment; the probe's path is appended before it")
    if has_key and url.scheme == "http" and url.hostname and not _loopback(url.hostname):
        out.append(f"{path}: plain http:// to {url.hostname}: the API key travels unencrypted (use https://)")
    return out


def config_warnings(dependencies: Mapping[str, Any]) -> list[str]:
    """Every warning for the validated dependencies (``Dependency`` objects of daemon.config)."""
    out: list[str] = []
    for name, dep in dependencies.items():
        options = dep.options
        if dep.kind == "llm" and options.base_url:
            out += base_url_warnings(name, options.provider, options.base_url, bool(options.api_key))
    return out
