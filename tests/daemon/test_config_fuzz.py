"""Fuzzing the config reader: whatever the text, a Config or a ConfigError, never anything else.

Hypothesis writes YAML documents (random trees dumped as YAML, and random mutations of the valid testdata:
characters inserted, deleted, replaced with YAML's special characters, slices repeated) and the parser runs in
process. A few of the nastiest shapes also go through ``failsoft check-config`` in a subprocess with a 1 GiB
address-space limit: exit 0 or 2, no traceback.
"""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from failsoft.daemon.config import Config, ConfigError, parse_config

ROOT = Path(__file__).resolve().parents[2]
VALID = sorted((ROOT / "tests" / "daemon" / "testdata" / "valid").glob("*.yaml"))
SEEDS = [p.read_text() for p in VALID]
ENV = {"OPENAI_API_KEY": "sk-fuzz-0123456789", "ANTHROPIC_API_KEY": "ak-fuzz-0123456789",
       "GEMINI_API_KEY": "gk-fuzz-0123456789", "DB_PASSWORD": "pw-fuzz", "HOSTNAME": "fuzz"}
SPECIAL = [*"&*[]{}:-!|>?#%@,'\"\\\t\n ", "${X}", "$${", "<<: ", "*a", "&a ", "!!binary ", "? ", "\0", "\ufeff", "é",
           "9" * 40, "1e999", ".nan", "~"]

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                derandomize=True)


def parse(text: str) -> Config | ConfigError:
    """parse_config's answer: the Config, or the ConfigError it raised (anything else fails the test)."""
    try:
        return parse_config(text, env=ENV, base_dir=ROOT / "tests" / "daemon" / "testdata" / "valid")
    except ConfigError as exc:
        assert exc.errors, "a ConfigError without a message"
        assert all(isinstance(e, str) and e for e in exc.errors)
        assert len(exc.errors) <= 101
        return exc


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """A valid testdata file with a few random edits."""
    text = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 40)))
        edit = draw(st.sampled_from(["insert", "delete", "replace", "repeat"]))
        piece = draw(st.one_of(st.sampled_from(SPECIAL), st.text(max_size=8)))
        if edit == "insert":
            text = text[:i] + piece + text[i:]
        elif edit == "delete":
            text = text[:i] + text[j:]
        elif edit == "replace":
            text = text[:i] + piece + text[j:]
        else:
            text = text[:j] + text[i:j] * draw(st.integers(2, 50)) + text[j:]
    return text


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                    st.text(max_size=30), st.sampled_from(["250ms", "2s", "5%", "1e-9", "-1s", "9" * 400,
                                                           "postgresql://u:p@h/db", "redis://h", "${NOPE}"]))
KEYS = st.one_of(st.sampled_from(["service", "http", "listen", "admin_token", "log", "level", "format",
                                  "publish", "redis", "prefix", "heartbeat", "defaults", "interval", "timeout",
                                  "jitter", "fast_interval", "down_interval", "initial", "max", "multiplier",
                                  "dependencies", "db", "kind", "dsn", "url", "address", "provider", "api_key",
                                  "headers", "policy", "levels", "rules", "when", "any_down", "capabilities",
                                  "llm_failover", "role"]),
                 st.text(max_size=10))
TREES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                      st.dictionaries(KEYS, inner, max_size=6)), max_leaves=40)


@FUZZ
@given(mutated())
def test_mutated_testdata_gives_a_config_or_a_config_error(text: str) -> None:
    """Random edits of the valid examples: a Config or a ConfigError listing problems, never an exception."""
    parse(text)


@FUZZ
@given(st.dictionaries(KEYS, TREES, max_size=8))
def test_random_documents_give_a_config_or_a_config_error(doc: dict[str, Any]) -> None:
    """Random trees of the config's own keys and odd values, dumped as YAML: a Config or a ConfigError."""
    parse(yaml.safe_dump(doc))


@FUZZ
@given(st.text(max_size=300))
def test_random_text_gives_a_config_or_a_config_error(text: str) -> None:
    """Any text at all (control characters, surrogates-free unicode): a Config or a ConfigError."""
    parse(text)


HOSTILE = [
    "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)),
    "x: " + "[" * 5000 + "]" * 5000,
    "x: " + "{a: " * 5000,
    "".join(f"k{i}: 1\n" for i in range(20_000)),
    "dependencies:\n  db: {kind: tcp, address: \"127.0.0.1:1\", interval: " + "9" * 5000 + "}\n",
    "? [a]\n: 1\n",
    "service: " + "s" * 200_000 + "\n",
]


def test_hostile_documents_through_the_cli(tmp_path: Path) -> None:
    """The issue's shapes through ``failsoft check-config`` under a 1 GiB address space: exit 2, the problem
    named, no traceback."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    for i, text in enumerate(HOSTILE):
        path = tmp_path / f"c{i}.yaml"
        path.write_text(text)
        result = subprocess.run([sys.executable, "-m", "failsoft", "check-config", str(path)], capture_output=True,
                                text=True, timeout=60, cwd=ROOT, check=False, preexec_fn=limit)
        assert result.returncode == 2, (i, result.stderr[-1500:])
        assert "Traceback" not in result.stderr, (i, result.stderr[-1500:])
        assert "problem(s) in the configuration" in result.stderr
