"""Packaging: one import root. The wheel puts only ``failsoft`` at the top of site-packages, installs beside
python-daemon (whose import name is ``daemon``) without either overwriting the other, and the app's import
``failsoft.client`` loads none of the daemon's heavy dependencies."""

from __future__ import annotations

import json
import os
import shutil
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
                     "failsoft/client.py", "failsoft/devtools/demo.py", "failsoft/daemon/static/statuspage.js",
                     "failsoft/daemon/openapi/core.yaml"):
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


def test_the_client_installs_without_the_daemons_dependencies(wheel: Path, tmp_path: Path) -> None:
    """``pip install failsoft`` (no extra) is the app's client: aiohttp and nothing of the daemon's (no asyncpg,
    redis, structlog, YAML, OpenTelemetry); both clients import; ``failsoft status`` works against nothing (exit 3,
    unreachable) and ``failsoft run`` exits 2 naming the ``daemon`` extra instead of a traceback."""
    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env)
    python = str(env / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
                   check=True, timeout=600, capture_output=True)
    listed = subprocess.run([python, "-m", "pip", "list", "--format=json"], capture_output=True, text=True,
                            check=True, timeout=60).stdout
    installed = {p["name"].lower() for p in json.loads(listed)}
    assert "aiohttp" in installed
    assert installed.isdisjoint({"asyncpg", "redis", "structlog", "pyyaml", "orjson", "opentelemetry-sdk",
                                 "prometheus-client"}), installed
    loaded = _loaded_after(python, "from failsoft.client import ServiceLevelClient, SyncServiceLevelClient", tmp_path)
    assert "failsoft.client" in loaded and _heavy(loaded) == []
    cli = str(env / "bin" / "failsoft")
    status = subprocess.run([cli, "status", "--url", "http://127.0.0.1:9"], capture_output=True, text=True,
                            timeout=60, check=False)
    assert status.returncode == 3, status.stderr
    run = subprocess.run([cli, "run", "--config", str(tmp_path / "none.yaml")], capture_output=True, text=True,
                         timeout=60, check=False)
    assert run.returncode == 2
    assert "pip install 'failsoft[daemon]'" in run.stderr and "Traceback" not in run.stderr


def _docker_context(dest: Path) -> Path:
    """What ``docker build`` sees: the paths .dockerignore admits, copied without .git (links kept as links)."""
    dest.mkdir(parents=True)
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    for name in (line[1:].rstrip("/") for line in lines if line.startswith("!")):
        src = ROOT / name
        if src.is_dir() and not src.is_symlink():
            shutil.copytree(src, dest / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name, follow_symlinks=False)
    return dest


@pytest.mark.parametrize(("pretend", "expected"), [("1.2.3", "1.2.3"), (None, "0.0.0")])
def test_a_tree_without_git_builds_with_the_version_it_is_given(
    tmp_path: Path, pretend: str | None, expected: str
) -> None:
    """The Docker build context has no .git: with the version the release passes (the Dockerfile's
    FAILSOFT_VERSION becomes SETUPTOOLS_SCM_PRETEND_VERSION_FOR_FAILSOFT) the wheel carries it; without it the
    build still works and says 0.0.0, never a made-up release."""
    context = _docker_context(tmp_path / "context")
    assert not (context / ".git").exists()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SETUPTOOLS_SCM")}
    if pretend is not None:
        env["SETUPTOOLS_SCM_PRETEND_VERSION_FOR_FAILSOFT"] = pretend
    out = tmp_path / "out"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(context)],
                   check=True, timeout=300, capture_output=True, env=env, cwd=tmp_path)
    assert [w.name for w in out.glob("*.whl")] == [f"failsoft-{expected}-py3-none-any.whl"]


def test_make_release_writes_the_artefacts_and_their_checksums(tmp_path: Path) -> None:
    """``.ci/release`` (what ``make release`` runs) writes the sdist, the wheel built from it, a CycloneDX SBOM of
    the runtime environment (the wheel with its daemon extra: failsoft and asyncpg are components, pytest is not)
    and SHA256SUMS that verify all three."""
    out = tmp_path / "dist"
    env = {**os.environ, "DIST": str(out), "VENV": str(Path(sys.executable).parent.parent)}
    done = subprocess.run([str(ROOT / ".ci" / "release")], capture_output=True, text=True, timeout=600, env=env,
                          check=False, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    names = sorted(p.name for p in out.iterdir())
    version = next(n for n in names if n.endswith(".tar.gz"))[len("failsoft-"):-len(".tar.gz")]
    assert names == sorted(["SHA256SUMS", f"failsoft-{version}.tar.gz", f"failsoft-{version}-py3-none-any.whl",
                            f"failsoft-{version}.cdx.json"])
    sums = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=out, capture_output=True, text=True, check=False)
    assert sums.returncode == 0 and sums.stdout.count(": OK") == 3, sums.stdout
    sbom = json.loads((out / f"failsoft-{version}.cdx.json").read_text())
    assert sbom["bomFormat"] == "CycloneDX"
    components = {c["name"].lower(): c.get("version") for c in sbom["components"]}
    assert components.get("failsoft") == version
    assert {"asyncpg", "aiohttp", "structlog"} <= set(components)
    assert "pytest" not in components
