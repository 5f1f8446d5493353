"""Secrets never leave the process: one function that every echoed text passes through."""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):(?P<pw>[^@/\s]+)@")
_KV_PASSWORD = re.compile(r"(?P<head>\b(?:password|passwd|pwd|api_key|apikey|token)\s*[=:]\s*)(?P<pw>[^\s,;&]+)", re.I)
_BEARER = re.compile(r"(?P<head>\bBearer\s+)(?P<pw>[A-Za-z0-9._~+/=-]{6,})")
# Shorter secrets would mask ordinary words; they are still covered by the patterns above.
_MIN_SECRET_LEN = 4


class Redactor:
    """Masks known secret values and anything shaped like a credential (URL passwords, bearer tokens)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        unique = {s for s in secrets if s and len(s) >= _MIN_SECRET_LEN}
        self._secrets = sorted(unique, key=len, reverse=True)
        self._known = re.compile("|".join(re.escape(s) for s in self._secrets)) if self._secrets else None

    def __call__(self, text: str) -> str:
        """``text`` with every secret replaced by ``***``."""
        if self._known is not None:
            text = self._known.sub(MASK, text)
        text = _URL_PASSWORD.sub(lambda m: f"{m['head']}:{MASK}@", text)
        text = _KV_PASSWORD.sub(lambda m: f"{m['head']}{MASK}", text)
        return _BEARER.sub(lambda m: f"{m['head']}{MASK}", text)


def url_password(url: str) -> str | None:
    """The password in ``scheme://user:password@host``, if any, so that it can be registered as a secret."""
    m = _URL_PASSWORD.search(url)
    return m["pw"] if m else None
