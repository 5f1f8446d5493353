"""Packaging: one import root. The wheel puts only ``failsoft`` at the top of site-packages, installs beside
python-daemon (whose import name is ``daemon``) without either overwriting the other, and the app's import
``failsoft.client`` loads none of the daemon's heavy dependencies."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# What an app must not pay for when it imports the client: the daemon's own dependencies.
HEAVY = ("asyncpg", "opentelemetry", "redis", "prometheus_client", "structlog", "yaml", "failsoft.daemon",
         "failsoft.probes", "failsoft.policies", "failsoft.devtools")


def _loaded_after(python: str, statement: str, cwd: Path) -> list[str]:
    """The module names loaded in a fresh interpreter after running ``statement``."""
    code = f"import sys; {statement}; import json; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True, cwd=cwd, timeout=60)
    return list(json.loads(out.stdout))


def _heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]


def test_importing_the_client_loads_nothing_heavy(tmp_path: Path) -> None:
    """``import failsoft.client`` in a fresh interpreter loads no asyncpg, OpenTelemetry, redis, structlog, YAML or
    daemon module; ``import failsoft.daemon.app`` does load them, so the check can tell the two apart."""
    client = _loaded_after(sys.executable, "import failsoft.client", tmp_path)
    assert "failsoft.client" in client
    assert _heavy(client) == []
    daemon = _loaded_after(sys.executable, "import failsoft.daemon.app", tmp_path)
    assert {"asyncpg", "redis", "failsoft.daemon"} <= set(_heavy(daemon))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from this checkout (symbolic links resolved into real files)."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out),
                    str(ROOT)], check=True, timeout=300, capture_output=True)
    return next(out.glob("failsoft-*.whl"))


def test_the_wheel_holds_one_import_root(wheel: Path) -> None:
    """Every file in the wheel is under ``failsoft/`` or its dist-info: no top-level daemon, probes or policies;
    the linked folders arrive as real files (the daemon, a probe, the default policy)."""
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"failsoft"}
    for expected in ("failsoft/daemon/app.py", "failsoft/probes/postgres.py", "failsoft/policies/default.yaml",
                     "failsoft/client.py", "failsoft/devtools/demo.py"):
        assert expected in names


def test_the_wheel_installs_beside_python_daemon(wheel: Path, tmp_path: Path) -> None:
    """In a fresh virtual environment with python-daemon installed too: site-packages gets ``failsoft`` and
    python-daemon keeps its own ``daemon``; both import, the client without heavy modules, and the console script
    runs."""
    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env)
    python = str(env / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel), "python-daemon"],
                   check=True, timeout=600, capture_output=True)
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    record = (next(site.glob("failsoft-*.dist-info")) / "RECORD").read_text().splitlines()
    ours = {line.split("/")[0].split(",")[0] for line in record}
    assert {t for t in ours if not t.endswith(".dist-info") and t != ".."} == {"failsoft"}
    assert (site / "daemon" / "pidfile.py").is_file()  # python-daemon's module, not ours
    loaded = _loaded_after(python, "import daemon.pidfile, failsoft.client", tmp_path)
    assert "daemon.pidfile" in loaded and "failsoft.client" in loaded
    assert _heavy(loaded) == []
    version = subprocess.run([str(env / "bin" / "failsoft"), "--version"], capture_output=True, text=True,
                             check=True, timeout=60)
    assert version.stdout.startswith("failsoft ")
