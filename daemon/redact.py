"""Secrets never leave the process: one function that every echoed text passes through.

Every pattern here runs in time linear in the text, whatever the text: redaction runs on the event loop over
text a client can choose (a malformed request line quoted in an error), so a pattern that backtracks over a
long run of letters would let one request stall every probe. Each pattern can only start at a boundary (a
lookbehind refuses starts inside a run) and its repeats are bounded or stop at a character the next part needs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"
# scheme://user:password@ -- the scheme can only start after a character that cannot be part of one, and has at
# most 32 characters, so a run of 16,000 letters is one failed attempt, not 16,000 attempts of 16,000 steps.
_URL_PASSWORD = re.compile(
    r"(?<![A-Za-z0-9+.-])(?P<head>[A-Za-z][A-Za-z0-9+.-]{0,31}://[^:/@\s]*):(?P<pw>[^@/\s]+)@")
_KEYS = r"(?:password|passwd|pwd|api_key|apikey|token)"
# key=value: always a credential (libpq's "host=db password=x", query strings).
_KV_EQUALS = re.compile(rf"(?P<head>\b{_KEYS}[ \t]{{0,8}}=[ \t]{{0,8}})(?P<pw>[^\s,;&]+)", re.I)
# key: value -- a credential in JSON, YAML or a dict ("password": "x", token: x), but prose when the key follows
# a word and one space ("Invalid header token: ..."), which must stay readable.
_KV_COLON = re.compile(
    rf"(?<![A-Za-z] )(?P<head>\b{_KEYS}[\"']?[ \t]{{0,8}}:[ \t]{{0,8}})(?P<pw>[^\s,;&]+)", re.I)
_BEARER = re.compile(r"(?P<head>\bBearer[ \t]{1,8})(?P<pw>[A-Za-z0-9._~+/=-]{6,})")
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
        text = _KV_EQUALS.sub(lambda m: f"{m['head']}{MASK}", text)
        text = _KV_COLON.sub(lambda m: f"{m['head']}{MASK}", text)
        return _BEARER.sub(lambda m: f"{m['head']}{MASK}", text)


def url_password(url: str) -> str | None:
    """The password in ``scheme://user:password@host``, if any, so that it can be registered as a secret."""
    m = _URL_PASSWORD.search(url)
    return m["pw"] if m else None
