"""Config input is bounded and every problem is a ConfigError with its place (check-config exits 2).

The cases that cannot be written as a small testdata file (binary content, files of megabytes, devices, values
from the environment) live here; the rest are in ``testdata/invalid/``. Each case of issue #11 used to crash
(exit 1 with a traceback), run for tens of seconds or take gigabytes.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from failsoft.daemon import limits
from failsoft.daemon.config import ConfigError, load_config, parse_config
from failsoft.daemon.safeyaml import YamlInputError, load

ROOT = Path(__file__).resolve().parents[2]
TCP = 'dependencies:\n  db: {kind: tcp, address: "127.0.0.1:5432"}\n'


def errors_of(path: Path, env: dict[str, str] | None = None) -> list[str]:
    """The errors load_config reports for ``path`` (the test fails if it loads)."""
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=env or {})
    return caught.value.errors


def test_invalid_utf8_is_refused_with_the_byte(tmp_path: Path) -> None:
    """A file with a byte that is not UTF-8 is refused naming the byte and its line."""
    p = tmp_path / "c.yaml"
    p.write_bytes(b"service: caf\xe9\n" + TCP.encode())
    assert errors_of(p) == [f"{p}: cannot read the config file (not UTF-8 text: byte 12 (line 1) cannot be decoded)"]


def test_a_utf16_file_is_refused_with_a_hint(tmp_path: Path) -> None:
    """A UTF-16 file (as some editors save) is refused with a hint to save it as UTF-8."""
    p = tmp_path / "c.yaml"
    p.write_bytes(("service: x\n" + TCP).encode("utf-16"))
    [error] = errors_of(p)
    assert error.startswith(f"{p}: cannot read the config file (not UTF-8 text: byte 0")
    assert "it looks like UTF-16; save it as UTF-8" in error


def test_a_utf8_byte_order_mark_is_fine(tmp_path: Path) -> None:
    """A UTF-8 file that starts with a byte-order mark loads."""
    p = tmp_path / "c.yaml"
    p.write_bytes(b"\xef\xbb\xbfservice: x\n" + TCP.encode())
    assert load_config(p, env={}).service == "x"


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null", "/dev/urandom"])
def test_a_device_as_the_config_is_refused_without_reading_it(device: str) -> None:
    """``--config /dev/zero`` is refused before reading (it was read until memory ran out)."""
    assert errors_of(Path(device)) == [f"{device}: cannot read the config file (not a regular file)"]


def test_a_fifo_as_the_policy_is_refused_without_blocking(tmp_path: Path) -> None:
    """A named pipe as the policy file neither blocks the load (nobody writes to it) nor is read."""
    fifo = tmp_path / "policy.fifo"
    os.mkfifo(fifo)
    p = tmp_path / "c.yaml"
    p.write_text(f"policy: {fifo}\n{TCP}")
    assert errors_of(p) == [f"policy: cannot read policy file '{fifo}' (not a regular file)"]


def test_a_file_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    """A config file over CONFIG_MAX_BYTES is refused by its size, before parsing."""
    p = tmp_path / "c.yaml"
    p.write_text(TCP + "# " + "x" * limits.CONFIG_MAX_BYTES + "\n")
    [error] = errors_of(p)
    assert error == f"{p}: cannot read the config file ({p.stat().st_size} bytes; at most {limits.CONFIG_MAX_BYTES} " \
                    "are read)"


def test_a_policy_file_that_is_not_a_policy_never_has_its_content_quoted(tmp_path: Path) -> None:
    """``policy: /etc/shadow``-like files: the error names the file and says it is not a policy, and quotes none
    of its lines (they used to come out one per "unknown key" error)."""
    shadow = tmp_path / "shadow"
    lines = ["root:$6$Zsecret-hash-1$abc:19000:0:99999:7:::", "daemon:*:19000:0:99999:7:::",
             "app: $6$Zsecret-hash-2$def", "token: secret-value-3"]
    shadow.write_text("\n".join(lines) + "\n")
    p = tmp_path / "c.yaml"
    p.write_text(f"policy: {shadow}\n{TCP}")
    errors = errors_of(p)
    assert errors == [f"policy: policy file '{shadow}' is not a policy: expected a mapping with levels, rules, "
                      "recover_after, capabilities"]
    said = "\n".join(errors).replace(str(shadow), "")
    for fragment in ("secret-hash", "secret-value", "root", "daemon", "99999"):
        assert fragment not in said


def test_yaml_errors_in_a_policy_file_do_not_quote_its_lines(tmp_path: Path) -> None:
    """A policy file that is not valid YAML is reported by line and column, without the line itself."""
    bad = tmp_path / "policy.yaml"
    bad.write_text("levels: [full\nsecret-line: hunter2-value: x\n")
    p = tmp_path / "c.yaml"
    p.write_text(f"policy: {bad}\n{TCP}")
    [error] = errors_of(p)
    assert error.startswith(f"policy: policy file '{bad}': invalid YAML at line ")
    assert "hunter2" not in error


def test_a_huge_admin_token_from_the_environment_is_refused() -> None:
    """A 10 MB admin_token (from ${VAR}) is refused by its length, and never echoed."""
    big = "t" * 10_000_000
    with pytest.raises(ConfigError) as caught:
        parse_config('http: {admin_token: "${TOKEN}"}\n' + TCP, env={"TOKEN": big})
    assert caught.value.errors == [f"http.admin_token: is {len(big)} characters long; at most "
                                   f"{limits.CONFIG_MAX_STRING} are allowed"]


def test_a_100kb_service_name_is_refused() -> None:
    """A 100 KB ``service:`` is refused by its length (its summary went through the redactor for 34 s)."""
    with pytest.raises(ConfigError) as caught:
        parse_config(f"service: {'s' * 100_000}\n{TCP}", env={})
    assert caught.value.errors == [f"service: is 100000 characters long; at most {limits.CONFIG_MAX_STRING} are "
                                   "allowed"]


def test_twenty_thousand_unknown_keys_list_a_hundred_errors_and_count_the_rest() -> None:
    """20,000 unknown keys give CONFIG_MAX_ERRORS lines and a count of the rest (de-duplication was quadratic)."""
    text = TCP + "".join(f"u{i}: 1\n" for i in range(20_000))
    with pytest.raises(ConfigError) as caught:
        parse_config(text, env={})
    errors = caught.value.errors
    assert len(errors) == limits.CONFIG_MAX_ERRORS + 1
    assert errors[0].startswith("u0: unknown key")
    assert errors[-1] == f"... and {20_000 - limits.CONFIG_MAX_ERRORS} more problem(s) not listed"


@pytest.mark.parametrize(("text", "message"), [
    ("a: " + "[" * 1000 + "]" * 1000, "nested more than 32 levels deep"),
    ("a:\n" + "".join(" " * i + f"k{i}:\n" for i in range(1, 300)), "nested more than 32 levels deep"),
    ("a: " + "{a: " * 1000, "nested more than 32 levels deep"),
    ("a: " + "9" * 5000, None),
    ("a: &a [*a]", "an alias refers to a node that contains it"),
    ("a: 2001-99-99", "a value cannot be read (ValueError)"),
    ("a: !!python/object:os.system ls", "could not determine a constructor"),
    ("a: b\0", "special characters are not allowed"),
], ids=["flow-1000", "block-300", "unclosed-1000", "5000-digits", "recursive", "bad-date", "python-tag", "nul"])
def test_the_yaml_reader_is_total(text: str, message: str | None) -> None:
    """Each input either loads or raises YamlInputError with the expected words: never RecursionError,
    ValueError (int digit limit), OverflowError or an arbitrary object."""
    if message is None:
        assert load(text) == {"a": float("inf")}
        return
    with pytest.raises(YamlInputError) as caught:
        load(text)
    assert message in str(caught.value)


def test_merge_keys_still_work_and_own_keys_override_them() -> None:
    """``<<: *defaults`` merges a mapping; a key the node sets itself wins and is not a duplicate."""
    assert load("d: &d {x: 1, y: 1}\nb: {<<: *d, y: 2}") == {"d": {"x": 1, "y": 1}, "b": {"x": 1, "y": 2}}


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    """``failsoft check-config PATH`` with a 1 GiB address-space limit (a bomb would hit it, not the machine)."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    return subprocess.run([sys.executable, "-m", "failsoft", "check-config", str(path)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
                          preexec_fn=limit)


@pytest.mark.parametrize("name", ["alias_bomb", "nesting_too_deep", "complex_key", "number_400_digits",
                                  "policy_not_a_file"])
def test_check_config_exits_2_with_the_place_for_hostile_files(name: str) -> None:
    """Through the CLI: exit 2, the place of the problem on stderr, no traceback, within a 1 GiB address space."""
    result = check_config(ROOT / "tests" / "daemon" / "testdata" / "invalid" / f"{name}.yaml")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "problem(s) in the configuration" in result.stderr


def test_check_config_exits_2_for_invalid_utf8(tmp_path: Path) -> None:
    """Through the CLI: an invalid UTF-8 file is exit 2 with the message, no traceback."""
    p = tmp_path / "c.yaml"
    p.write_bytes(b"service: \xff\xfe\n")
    result = check_config(p)
    assert result.returncode == 2
    assert "not UTF-8 text" in result.stderr
    assert "Traceback" not in result.stderr
