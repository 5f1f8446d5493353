"""failsoft.daemon.config: YAML in, a frozen Config out, or every error with its YAML path.

Most cases are data, as blackbox_exporter does it: ``testdata/invalid/*.yaml`` hold one small invalid config
each, with the exact messages expected in ``# expect:`` header lines (``{file}`` stands for the file's path),
environment variables in ``# env: NAME=value`` lines and values that must never be echoed in ``# secret:``
lines. ``testdata/valid/*.yaml`` must load.
"""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import pytest

from failsoft.daemon.config import (
    Config,
    ConfigError,
    ProbeSettings,
    load_config,
    parse_config,
    resolve_path,
    summary,
)
from failsoft.daemon.yamlread import parse_duration, parse_fraction, parse_listen

TESTDATA = Path(__file__).parent / "testdata"
INVALID = sorted((TESTDATA / "invalid").glob("*.yaml"))
VALID = sorted((TESTDATA / "valid").glob("*.yaml"))


@dataclasses.dataclass(frozen=True)
class Header:
    """What a testdata file's leading comment says about it."""

    expect: list[str]
    env: dict[str, str]
    secrets: list[str]


def header(path: Path) -> Header:
    """Read the ``# expect:``, ``# env:`` and ``# secret:`` lines at the top of a testdata file."""
    expect, env, secrets = [], {}, []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        key, _, value = line[1:].strip().partition(": ")
        if key == "expect":
            expect.append(value.replace("{file}", str(path)))
        elif key == "env":
            name, _, val = value.partition("=")
            env[name] = val
        elif key == "secret":
            secrets.append(value)
    return Header(expect, env, secrets)


def test_there_is_testdata() -> None:
    """The parametrized tests below really run over files (a wrong glob would make them vacuous)."""
    assert len(INVALID) >= 50
    assert len(VALID) >= 5
    for path in INVALID:
        assert header(path).expect, f"{path.name} has no '# expect:' line"


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_config_gives_exactly_the_expected_errors(path: Path) -> None:
    """Each invalid file is refused with exactly its expected messages (path first, then what to fix), in order,
    and never with a secret in them."""
    h = header(path)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=h.env)
    assert caught.value.errors == h.expect
    text = str(caught.value)
    for secret in h.secrets:
        assert secret not in text


@pytest.mark.parametrize("path", VALID, ids=[p.stem for p in VALID])
def test_valid_config_loads_and_its_summary_hides_secrets(path: Path) -> None:
    """Each valid example loads; the check-config summary never shows a secret it holds."""
    h = header(path)
    config = load_config(path, env=h.env)
    assert isinstance(config, Config)
    lines = "\n".join(summary(config))
    for secret in [*h.secrets, *config.secrets]:
        if len(secret) >= 4:
            assert secret not in lines


def load(name: str, **env: str) -> Config:
    """A valid example with its header's environment (plus ``env``)."""
    path = TESTDATA / "valid" / name
    return load_config(path, env={**header(path).env, **env})


def test_the_contract_example_with_its_llm_providers_defined() -> None:
    """The contract's full example (anthropic and gemini defined) parses into what it says."""
    c = load("contract_example.yaml")
    assert c.service == "checkout-api"
    assert (c.http.host, c.http.port, c.http.admin_token) == ("127.0.0.1", 8765, "")
    assert (c.log.level, c.log.format) == ("info", "json")
    assert c.publish is not None
    assert (c.publish.redis_url, c.publish.prefix, c.publish.heartbeat) == (
        "redis://:redis-example-secret@127.0.0.1:6379/0", "failsoft", 5.0)
    assert {n: d.kind for n, d in c.dependencies.items()} == {
        "db": "postgres", "cache": "redis", "openai": "llm", "anthropic": "llm", "gemini": "llm",
        "search": "http", "broker": "tcp"}
    db = c.dependencies["db"]
    assert db.settings == ProbeSettings()  # the example's defaults block spells out the built-in defaults
    assert (db.options.dsn, db.options.role, db.options.max_replication_lag) == (
        "postgresql://app:pg-example-secret@127.0.0.1:5432/app", "primary", 10.0)
    assert c.dependencies["search"].options.expect_status == (200,)
    assert c.dependencies["broker"].options.address == "127.0.0.1:5672"
    assert c.dependencies["openai"].options.min_headroom == pytest.approx(0.05)
    assert c.llm_failover == ("openai", "anthropic", "gemini")
    p = c.policy
    assert p.levels == ("full", "degraded", "limited", "cache_only")
    assert [r.level for r in p.rules] == ["cache_only", "limited", "degraded"]
    assert p.rules[0].message == "Showing saved data; changes are paused"
    assert p.rules[1].when[0].dependencies == ("openai", "anthropic", "gemini")
    assert p.recover_after == 5.0
    assert p.capabilities is not None
    assert p.capabilities["limited"] == ("search", "write")
    for secret in ("pg-example-secret", "redis-example-secret", "sk-example-secret-0000",
                   "sk-ant-example-secret-0000", "AIza-example-secret-0000"):
        assert secret in c.secrets
        assert secret not in c.redactor()(f"error talking to {c.dependencies['db'].options.dsn} with {secret}")


def test_every_duration_form() -> None:
    """1m30s, 250ms, 0.5, "2", 1.5s, 1h, 5m, 750ms and percentages all land as seconds and fractions."""
    c = load("durations.yaml")
    broker, search = c.dependencies["broker"].settings, c.dependencies["search"].settings
    assert (broker.interval, broker.timeout, broker.fast_interval, broker.slow_threshold) == (90.0, 2.0, 0.5, 2.0)
    assert broker.jitter == 0.25
    assert broker.down_interval == dataclasses.replace(broker.down_interval, initial=1.5, max=3600.0, multiplier=3.0)
    assert (search.interval, search.timeout) == (300.0, 0.25)
    assert search.jitter == pytest.approx(0.05)
    assert c.policy.recover_after == 0.75


def test_env_variables_and_defaults() -> None:
    """``${VAR}`` from the environment, ``${VAR:-default}`` when unset, ``$${...}`` as a literal."""
    c = load("env_defaults.yaml")
    assert c.service == "orders"
    assert (c.http.host, c.http.port, c.http.admin_token) == ("127.0.0.1", 0, "")
    assert c.dependencies["db"].options.dsn == "postgresql://app:pg-default-secret@127.0.0.1:5432/app"
    assert c.dependencies["cache"].options.url == "redis://:cache-env-secret@127.0.0.1:6380/1"
    assert c.dependencies["search"].options.headers == {"X-Literal": "${NOT_EXPANDED}"}
    assert {"pg-default-secret", "cache-env-secret"} <= set(c.secrets)
    overridden = load("env_defaults.yaml", SERVICE_NAME="payments", FAILSOFT_ADMIN_TOKEN="admin-token-123456")
    assert overridden.service == "payments"
    assert overridden.http.admin_token == "admin-token-123456"
    assert "admin-token-123456" in overridden.secrets


def test_custom_levels_and_several_matchers() -> None:
    """A renamed level list is the severity order; a rule keeps all of its matchers."""
    c = load("custom_levels.yaml")
    assert c.policy.levels == ("green", "yellow", "orange", "red")
    assert [(cond.matcher, cond.dependencies) for cond in c.policy.rules[1].when] == [
        ("any_down", ("cache",)), ("any_degraded", ("db",))]


def test_policy_from_a_file_next_to_the_config() -> None:
    """``policy: <path>`` is read relative to the config file."""
    c = load("policy_file.yaml")
    assert c.policy.levels == ("full", "read_only")
    assert c.policy.recover_after == 1.0


def test_the_builtin_policy_adapts_to_the_configured_dependencies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``policy:``, the shipped policy keeps only rules about dependencies this config has; the service
    name defaults to $FAILSOFT_SERVICE, else the host name."""
    c = load("minimal.yaml")
    assert c.policy.levels == ("full", "degraded", "limited", "cache_only")
    assert c.policy.rules == ()
    assert c.service == socket.gethostname()
    assert any("built-in default policy" in n for n in c.notes)
    named = load("minimal.yaml", FAILSOFT_SERVICE="from-env")
    assert named.service == "from-env"
    text = 'dependencies:\n  db: {kind: tcp, address: "127.0.0.1:1"}\n  cache: {kind: tcp, address: "127.0.0.1:2"}\n'
    two = parse_config(text, {})
    assert [(r.level, [c.dependencies for c in r.when]) for r in two.policy.rules] == [
        ("cache_only", [("db",)]), ("degraded", [("db", "cache")])]


def test_config_is_frozen() -> None:
    """The parsed config cannot be changed by whoever holds it."""
    c = load("minimal.yaml")
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.service = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.dependencies["broker"].settings.timeout = 9  # type: ignore[misc]


def test_a_missing_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    """A config path that does not exist is an error that names the path."""
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(missing, env={})
    assert caught.value.errors == [f"{missing}: cannot read the config file (No such file or directory)"]


def test_config_path_resolution() -> None:
    """``--config PATH``, else ``$FAILSOFT_CONFIG``, else ``./failsoft.yaml``."""
    assert resolve_path("a.yaml", {"FAILSOFT_CONFIG": "b.yaml"}) == Path("a.yaml")
    assert resolve_path(None, {"FAILSOFT_CONFIG": "b.yaml"}) == Path("b.yaml")
    assert resolve_path(None, {}) == Path("failsoft.yaml")


@pytest.mark.parametrize(("text", "seconds"), [
    ("250ms", 0.25), ("2s", 2.0), ("5m", 300.0), ("1h", 3600.0), ("1m30s", 90.0), ("1h2m3s", 3723.0),
    ("1.5s", 1.5), (" 2s ", 2.0), ("0", 0.0), ("3", 3.0), (3, 3.0), (0.25, 0.25), ("10", 10.0),
])
def test_parse_duration_accepts(text: object, seconds: float) -> None:
    """Durations with units, compound units, and plain numbers of seconds."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["fast", "", "2 s", "s", "-1s", "-1", "2d", "1s2", "1.2.3s", True, None, [1],
                                  "nan", "inf", float("nan"), float("inf")])
def test_parse_duration_refuses(text: object) -> None:
    """Anything else is a ValueError (which the reader turns into an error naming the path)."""
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(("text", "fraction"), [("5%", 0.05), ("0.05", 0.05), (0.5, 0.5), ("100%", 1.0), (0, 0.0)])
def test_parse_fraction(text: object, fraction: float) -> None:
    """Percentages and plain fractions."""
    assert parse_fraction(text) == pytest.approx(fraction)


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:8765", ("127.0.0.1", 8765)), ("0.0.0.0:0", ("0.0.0.0", 0)), ("[::1]:9000", ("::1", 9000)),
    (":8080", ("127.0.0.1", 8080)),
])
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    """host:port, [v6]:port; an empty host means loopback (a sidecar never listens wide by default)."""
    assert parse_listen(text) == expected


def test_the_documented_configuration_example_is_valid() -> None:
    """The config reference a newcomer copies from docs/configuration.md parses as it stands (with its ${VAR}s
    set)."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    section = page[page.index("# Configuration"):]
    example = section[section.index("```yaml\n") + 8:section.index("```", section.index("```yaml\n") + 8)]
    env = {"DATABASE_URL": "postgresql://app:pw@127.0.0.1:5432/app", "REDIS_URL": "redis://127.0.0.1:6379/0",
           "OPENAI_API_KEY": "sk-readme-example"}
    config = parse_config(example, env)
    assert set(config.dependencies) == {"db", "cache", "openai", "search", "broker"}
    assert config.publish is not None and config.publish.redis_url == env["REDIS_URL"]
    assert config.llm_failover == ("openai",)
    assert "sk-readme-example" in config.secrets
