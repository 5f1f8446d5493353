"""Deprecated config keys: read as their replacement with a warning naming the YAML path, for one minor version."""

from __future__ import annotations

import pytest
import structlog

from failsoft.daemon.app import Daemon
from failsoft.daemon.config import ConfigError, parse_config, summary
from failsoft.daemon.deprecations import DEPRECATIONS, Deprecation

TABLE = (
    Deprecation("dependencies.*.probe_timeout", "timeout", since="0.2", removed_in="0.3"),
    Deprecation("http.cors", None, since="0.2", removed_in="0.3", note="the API never sent CORS headers"),
)
BASE = """
http: {listen: "127.0.0.1:0"%s}
dependencies:
  db: {kind: tcp, address: "127.0.0.1:5432", probe_timeout: 2s}
  other: {kind: tcp, address: "127.0.0.1:5433"}
"""


def test_a_renamed_key_is_read_as_its_replacement_with_a_warning() -> None:
    """``dependencies.db.probe_timeout`` sets ``timeout`` (2 s) and warns with the path, the versions and the
    key to write instead; ``check-config``'s summary prints the same warning."""
    config = parse_config(BASE % "", deprecations=TABLE)
    assert config.dependencies["db"].settings.timeout == 2.0
    assert config.dependencies["other"].settings.timeout == 0.5
    assert config.warnings == (
        "dependencies.db.probe_timeout: deprecated since 0.2 and removed in 0.3; write dependencies.db.timeout "
        "instead",
    )
    assert f"warning: {config.warnings[0]}" in summary(config)


def test_a_retired_key_is_dropped_with_a_warning() -> None:
    """A key with no replacement is accepted and ignored, and the warning says to remove it and why."""
    config = parse_config(BASE % ", cors: true", deprecations=TABLE)
    assert "http.cors: deprecated since 0.2 and removed in 0.3; it has no effect; remove it (the API never sent " \
           "CORS headers)" in config.warnings


def test_old_and_new_key_together_are_an_error() -> None:
    """Setting both the deprecated key and its replacement is an error naming the old path."""
    text = BASE.replace("probe_timeout: 2s", "probe_timeout: 2s, timeout: 1s") % ""
    with pytest.raises(ConfigError) as exc:
        parse_config(text, deprecations=TABLE)
    assert exc.value.errors == [
        "dependencies.db.probe_timeout: deprecated and replaced by dependencies.db.timeout, which is also set; "
        "remove dependencies.db.probe_timeout"
    ]


def test_without_the_table_entry_the_old_key_is_an_unknown_key() -> None:
    """Once the entry is removed (the next minor release), the old key is an error like any unknown key."""
    with pytest.raises(ConfigError) as exc:
        parse_config(BASE % "", deprecations=())
    assert exc.value.errors[0].startswith("dependencies.db.probe_timeout: unknown key")


def test_each_entry_warns_for_exactly_one_minor_version() -> None:
    """Every shipped entry is removed in the minor release right after the one that deprecated it."""
    for d in (*DEPRECATIONS, *TABLE):
        major, minor = (int(x) for x in d.since.split("."))
        assert d.removed_in == f"{major}.{minor + 1}", d


async def test_the_daemon_logs_each_warning_at_start() -> None:
    """Starting the daemon with a deprecated key logs ``config_warning`` at warning level with the text."""
    config = parse_config(BASE % "", deprecations=TABLE)
    with structlog.testing.capture_logs() as logs:
        daemon = await Daemon.start(config)
        await daemon.stop()
    warned = [e for e in logs if e["event"] == "config_warning"]
    assert [(e["log_level"], e["warning"]) for e in warned] == [("warning", config.warnings[0])]
