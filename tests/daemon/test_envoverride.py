"""FAILSOFT_LISTEN, FAILSOFT_SERVICE and FAILSOFT_POD override the file (bad values: see
testdata/invalid/env_override_invalid.yaml)."""

from __future__ import annotations

from typing import Any

from failsoft.daemon.config import parse_config, summary
from failsoft.devtools.localservers import free_port

FILE = """
service: from-file
http: {listen: "127.0.0.1:8765"}
dependencies:
  db: {kind: tcp, address: "127.0.0.1:5432"}
"""


def test_the_environment_wins_over_the_file_and_check_config_says_so() -> None:
    """FAILSOFT_LISTEN and FAILSOFT_SERVICE replace the file's values; the summary notes where each came from and
    what the file said."""
    config = parse_config(FILE, {"FAILSOFT_LISTEN": "0.0.0.0:9000", "FAILSOFT_SERVICE": "payments-api"})
    assert (config.http.host, config.http.port, config.service) == ("0.0.0.0", 9000, "payments-api")
    lines = summary(config)
    assert "note: http.listen: 0.0.0.0:9000 from FAILSOFT_LISTEN (the file says 127.0.0.1:8765)" in lines
    assert "note: service: payments-api from FAILSOFT_SERVICE (the file says from-file)" in lines


def test_overrides_fill_settings_the_file_does_not_have() -> None:
    """A file without ``http`` or ``service`` takes both from the environment (IPv6 listen address included)."""
    config = parse_config('dependencies: {db: {kind: tcp, address: "127.0.0.1:5432"}}',
                          {"FAILSOFT_LISTEN": "[::]:8765", "FAILSOFT_SERVICE": "checkout"})
    assert (config.http.host, config.http.port, config.service) == ("::", 8765, "checkout")
    assert "http.listen: [::]:8765 from FAILSOFT_LISTEN" in config.notes


def test_an_empty_variable_counts_as_unset() -> None:
    """``value: ""`` in a manifest leaves the file's setting alone, with no note."""
    config = parse_config(FILE, {"FAILSOFT_LISTEN": "", "FAILSOFT_SERVICE": ""})
    assert (config.http.port, config.service) == (8765, "from-file")
    assert not [n for n in config.notes if "FAILSOFT_" in n]


def test_failsoft_pod_overrides_pod_where_the_config_has_one() -> None:
    """FAILSOFT_POD replaces ``pod`` (fleet mode's replica id), and is checked like the others."""
    config = parse_config(FILE + "pod: from-file\n", {"FAILSOFT_POD": "checkout-7d9f-x2v4q"})
    assert config.pod == "checkout-7d9f-x2v4q"
    assert "pod: checkout-7d9f-x2v4q from FAILSOFT_POD (the file says from-file)" in config.notes


def test_failsoft_run_binds_and_publishes_as_the_environment_says(run_daemon: Any) -> None:
    """The daemon process started with FAILSOFT_LISTEN and FAILSOFT_SERVICE listens on that port and publishes
    under that service, whatever the file says."""
    port = free_port()
    d = run_daemon('service: from-file\nhttp: {listen: "127.0.0.1:0"}\n'
                   f'dependencies: {{db: {{kind: tcp, address: "127.0.0.1:{free_port()}"}}}}\n',
                   env={"FAILSOFT_LISTEN": f"127.0.0.1:{port}", "FAILSOFT_SERVICE": "from-env"})
    assert d.url == f"http://127.0.0.1:{port}"
    assert d.state()["service"] == "from-env"
