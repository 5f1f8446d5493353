"""GET /service-level throughput with wrk, beside a bare aiohttp app and nginx serving the very same bytes.

The anchors run in the same bench run, on the same machine, one after the other, so the ratio means something even
on a noisy machine. Every server answers with the same body and the same headers (ETag, X-Failsoft-Index,
Cache-Control, Content-Type) that failsoft sent a moment before.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

from benchlib import Figure, Rows, free_port, wait_http

from failsoft.devtools.localservers import RedisServer

# A bare aiohttp app: the least an aiohttp server can do to answer these bytes (no middleware, no logging).
BARE_APP = """
import sys
from aiohttp import web

body = open(sys.argv[1], "rb").read()
etag, index = sys.argv[3], sys.argv[4]
loop_kind = sys.argv[5]


async def handler(request):
    return web.Response(body=body, content_type="application/json",
                        headers={"ETag": etag, "X-Failsoft-Index": index, "Cache-Control": "no-cache"})


app = web.Application()
app.router.add_get("/service-level", handler)
loop = None
if loop_kind == "uvloop":
    import uvloop
    loop = uvloop.new_event_loop()
web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), access_log=None, print=None, loop=loop)
"""

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location = /service-level {{
            default_type application/json;
            add_header ETag '{etag}';
            add_header X-Failsoft-Index {index};
            add_header Cache-Control no-cache;
            etag off;
            alias {tmp}/body.json;
        }}
    }}
}}
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk_cpu(url: str, seconds: int, pid: int, headers: tuple[str, ...] = ()) -> tuple[float, float]:
    """(requests per second, server CPU microseconds per request): the second is what a busy machine disturbs
    least, since other processes steal wall time from the server, not the CPU it spends per answer."""
    before = cpu_seconds(pid)
    rate = wrk(url, seconds, headers=headers)
    return rate, (cpu_seconds(pid) - before) / (rate * seconds) * 1e6


def wrk(url: str, seconds: int, connections: int = 50, headers: tuple[str, ...] = ()) -> float:
    """Requests per second that ``wrk -t1 -c<connections>`` measured against ``url``."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s"]
    for h in headers:
        argv += ["-H", h]
    out = subprocess.run([*argv, url], capture_output=True, text=True, check=True, timeout=seconds + 30).stdout
    found = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    if not found:
        raise RuntimeError(f"wrk printed no Requests/sec:\n{out}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"wrk saw {errors.group(1)} error answers from {url}")
    return float(found.group(1))


def _uvloop_available() -> bool:
    return subprocess.run([sys.executable, "-c", "import uvloop"], capture_output=True, check=False).returncode == 0


def bench_serving(rows: Rows, quick: bool) -> None:
    """wrk -t1 -c50 against failsoft, bare aiohttp (default loop, and uvloop when installed) and nginx."""
    if shutil.which("wrk") is None:
        rows.skip("GET /service-level req/s", "wrk is not installed (apt-get install wrk, or run make bench as root)")
        return
    seconds = 3 if quick else 8
    rounds = 2 if quick else 3
    tmp = Path(tempfile.mkdtemp(prefix="failsoft-bench-serving-"))
    with RedisServer() as rd:
        from support import DaemonProcess

        config = textwrap.dedent(f"""
            http: {{listen: "127.0.0.1:0"}}
            dependencies:
              cache: {{kind: redis, url: "{rd.url}"}}
        """)
        daemon = DaemonProcess(config, tmp, env={"FAILSOFT_EVENT_LOOP": "asyncio"}).start()
        daemons = [daemon]
        procs: list[subprocess.Popen[bytes]] = []
        try:
            with urllib.request.urlopen(daemon.url + "/service-level", timeout=5) as resp:
                body, etag, index = resp.read(), resp.headers["ETag"], resp.headers["X-Failsoft-Index"]
            (tmp / "body.json").write_bytes(body)
            tmp.chmod(0o755)  # nginx's workers run as an unprivileged user when started by root
            (tmp / "bare.py").write_text(BARE_APP)
            servers = {"failsoft (asyncio)": daemon.url}
            loops = ["asyncio", "uvloop"] if _uvloop_available() else ["asyncio"]
            if "uvloop" in loops:
                (tmp / "uv").mkdir()
                daemons.append(DaemonProcess(config, tmp / "uv", env={"FAILSOFT_EVENT_LOOP": "uvloop"}).start())
                servers["failsoft (uvloop)"] = daemons[-1].url
            else:
                rows.skip("failsoft on uvloop", "uvloop is not installed (pip install 'failsoft[uvloop]')")
            for loop in loops:
                port = free_port()
                procs.append(subprocess.Popen(
                    [sys.executable, str(tmp / "bare.py"), str(tmp / "body.json"), str(port), etag, index, loop],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                ))
                servers[f"bare aiohttp ({loop})"] = f"http://127.0.0.1:{port}"
            _start_nginx(rows, tmp, etag, index, procs=procs, servers=servers)
            for url in servers.values():
                wait_http(url + "/service-level")
            results: dict[str, list[float]] = {name: [] for name in servers}
            fs = daemons[-1]
            name304 = f"failsoft ({'uvloop' if len(daemons) > 1 else 'asyncio'}) 304 with If-None-Match"
            results[name304] = []
            for _ in range(rounds):  # interleaved, so that a noisy moment hits every server alike
                for name, url in servers.items():
                    results[name].append(wrk(url + "/service-level", seconds))
                results[name304].append(wrk(fs.url + "/service-level", seconds, headers=(f"If-None-Match: {etag}",)))
                time.sleep(0.2)
        finally:
            for p in procs:
                p.terminate()
                p.wait(5)
            for d in daemons:
                d.stop()
    bare = max(results["bare aiohttp (asyncio)"])
    for name, samples in results.items():
        best = max(samples)
        ratio = f"{best / bare:.2f}x bare aiohttp" if "bare aiohttp (asyncio)" not in name else "1.00x (anchor)"
        rows.add(Figure(f"GET /service-level req/s: {name}", best, "req/s", samples=samples, note=ratio,
                        key=f"serving.{_key(name)}"))


def _start_nginx(rows: Rows, tmp: Path, etag: str, index: str, *, procs: list[subprocess.Popen[bytes]],
                 servers: dict[str, str]) -> None:
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None:
        rows.skip("nginx req/s", "nginx is not installed (apt-get install nginx, or run make bench as root)")
        return
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, port=port, etag=etag, index=index))
    procs.append(subprocess.Popen([nginx, "-c", str(conf), "-p", str(tmp)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    servers["nginx (1 worker)"] = f"http://127.0.0.1:{port}"


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
