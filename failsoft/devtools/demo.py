"""``failsoft demo``: the whole thing on one machine with no setup.

Starts a throw-away PostgreSQL and Redis from the local binaries and two simulated LLM providers, runs the
daemon against them, and opens on the status page (``GET /``), whose buttons crash, hang and restore the servers
while the level moves; the same commands can be typed in the terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from failsoft.daemon import logs
from failsoft.daemon.app import Daemon, StartupError
from failsoft.daemon.config import ConfigError, parse_config
from failsoft.daemon.terminal import format_status
from failsoft.devtools import demoroutes
from failsoft.devtools.llmsim import ProviderSimulator
from failsoft.devtools.localservers import PostgresServer, RedisServer, ServerError

CONFIG = """\
service: demo
http: {{listen: "127.0.0.1:{port}"}}
log: {{level: info, format: console}}
publish: {{redis: cache, heartbeat: 5s}}
defaults: {{down_interval: {{initial: 500ms, max: 2s}}}}
dependencies:
  db: {{kind: postgres, dsn: "{dsn}"}}
  cache: {{kind: redis, url: "{redis}"}}
  openai: {{kind: llm, provider: openai, base_url: "{openai_url}", api_key: demo-key-openai}}
  anthropic: {{kind: llm, provider: anthropic, base_url: "{anthropic_url}", api_key: demo-key-anthropic}}
llm_failover: [openai, anthropic]
policy:
  levels: [full, degraded, limited, cache_only]
  recover_after: 3s
  rules:
    - level: cache_only
      when: {{any_down: [db]}}
      message: Showing saved data; changes are paused
    - level: limited
      when: {{all_down: [openai, anthropic]}}
      message: AI features are temporarily unavailable
    - level: degraded
      when: {{any_not_healthy: [db, cache, openai, anthropic]}}
  capabilities:
    full: [chat, search, write]
    degraded: [chat, search, write]
    limited: [search, write]
    cache_only: [search]
"""

HELP = """
  Status page: http://127.0.0.1:{port}/   <- open it in a browser; its buttons break things

  failsoft demo is running: http://127.0.0.1:{port}/service-level   (config: {config})

  Try, in another terminal:
    curl -s http://127.0.0.1:{port}/service-level | python3 -m json.tool
    .venv/bin/failsoft status --url http://127.0.0.1:{port}
    curl -s 'http://127.0.0.1:{port}/service-level?index=SEQ&wait=30s'   # returns when the level changes

  Type a command here and press Enter:
    db         crash PostgreSQL (kill -9 of all its processes)  -> level cache_only; again: restart it
    cache      hang Redis (SIGSTOP)                             -> level degraded;   again: resume it
    openai     make the simulated OpenAI answer 500s            -> active_llm anthropic; again: heal it
    anthropic  make the simulated Anthropic reset connections   -> with openai broken too: level limited
    ratelimit  make OpenAI answer 429 with retry-after: 10      -> degraded/rate_limited, no call for 10s
    status     print the level and the dependencies
    help       this text
    quit       stop everything (Ctrl-C works too)

  The same faults by hand: kill -KILL {pg_pid} (PostgreSQL), kill -STOP {redis_pid} / kill -CONT {redis_pid} (Redis),
    curl -X POST {sim}/_sim/openai -d '{{"mode": "error"}}'     (modes: healthy, error, rate_limit, quota,
    auth, hang, slow, reset, ...; GET {sim}/_sim lists them with request counts)
"""


class Demo:
    """The servers, the daemon and the toggles."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.pg = PostgresServer()
        self.redis = RedisServer()
        self.db_crashed = False
        self.cache_hung = False
        self.daemon: Daemon | None = None
        self.llm = ProviderSimulator({"openai": "openai", "anthropic": "anthropic"})
        self.llm_modes: dict[str, str] = {}  # provider -> the failure mode it was switched to
        self.config_path = Path(tempfile.mkdtemp(prefix="failsoft-demo-")) / "failsoft.yaml"

    def help(self) -> str:
        """What to try."""
        return HELP.format(port=self.port, config=self.config_path, pg_pid=self.pg.pid or "?",
                           redis_pid=self.redis.pid or "?", sim=self.llm.url)

    async def toggle_db(self) -> str:
        """Crash PostgreSQL, or start it again."""
        if self.db_crashed:
            await asyncio.to_thread(self.pg.start)
            self.db_crashed = False
            return "PostgreSQL is back; the level recovers once it has held for recover_after (3s)"
        await asyncio.to_thread(self.pg.kill)
        self.db_crashed = True
        return "PostgreSQL crashed (kill -9); the same command again restarts it"

    async def toggle_cache(self) -> str:
        """Hang Redis, or resume it."""
        if self.cache_hung:
            self.redis.resume()
            self.cache_hung = False
            return "Redis resumed"
        self.redis.pause()
        self.cache_hung = True
        return "Redis hangs (SIGSTOP): probes time out after 500ms; the same command again resumes it"

    def toggle_llm(self, name: str, mode: str, **params: object) -> str:
        """Break a simulated provider in ``mode``, or heal it when it already is in that mode."""
        if self.llm_modes.get(name) == mode:
            self.llm.set_mode(name, "healthy")
            del self.llm_modes[name]
            return f"{name} is healthy again; a switch back to it waits recover_after (3s)"
        self.llm.set_mode(name, mode, **params)
        self.llm_modes[name] = mode
        return f"{name} now answers {mode}; the same command again heals it"

    def active_faults(self) -> set[str]:
        """The names of the commands whose fault is on (the status page's buttons show them pressed)."""
        on = {"db"} if self.db_crashed else set()
        if self.cache_hung:
            on.add("cache")
        modes = {("openai", "error"): "openai", ("anthropic", "reset"): "anthropic",
                 ("openai", "rate_limit"): "ratelimit"}
        on.update(command for key, command in modes.items() if self.llm_modes.get(key[0]) == key[1])
        return on

    def status(self) -> str:
        """The level line and the dependency table."""
        if self.daemon is None or self.daemon.runtime.hub.current is None:
            return "starting"
        return format_status(self.daemon.runtime.hub.current.snapshot.to_dict())

    async def command(self, line: str) -> str | None:
        """Run one typed command; None means quit."""
        actions: dict[str, Callable[[], object]] = {
            "db": self.toggle_db, "cache": self.toggle_cache, "status": self.status, "help": self.help,
            "openai": lambda: self.toggle_llm("openai", "error"),
            "anthropic": lambda: self.toggle_llm("anthropic", "reset"),
            "ratelimit": lambda: self.toggle_llm("openai", "rate_limit", retry_after=10),
        }
        word = line.strip().lower()
        if word in ("q", "quit", "exit"):
            return None
        if not word:
            return ""
        if word not in actions:
            return f"unknown command {word!r}: try db, cache, openai, anthropic, ratelimit, status, help or quit"
        result = actions[word]()
        if asyncio.iscoroutine(result):
            result = await result
        return str(result)


def _stdin_readable_by_the_loop() -> bool:
    """Whether standard input is something the event loop can watch: a terminal, a pipe or a socket.

    Not /dev/null, a regular file or a closed stdin (a CI job, ``make demo < /dev/null``): epoll refuses those,
    and asyncio would only report it later, as a traceback from a callback.
    """
    try:
        if sys.stdin is None:
            return False
        mode = os.fstat(sys.stdin.fileno()).st_mode
        return sys.stdin.isatty() or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)
    except (OSError, ValueError, AttributeError):
        return False


async def _read_commands(demo: Demo, stop: asyncio.Event) -> None:
    """Read lines from the terminal without blocking the daemon's loop."""
    if not _stdin_readable_by_the_loop():
        return  # no commands to read: the demo runs until Ctrl-C or SIGTERM
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    except (OSError, ValueError):
        return  # no usable stdin (CI, a pipe closed at once): the demo runs until Ctrl-C
    while not stop.is_set():
        line = await reader.readline()
        if not line:
            return
        answer = await demo.command(line.decode(errors="replace"))
        if answer is None:
            stop.set()
            return
        if answer:
            print(answer, flush=True)


async def _main(demo: Demo) -> int:
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await demo.llm.start("127.0.0.1", 0)
    config_text = CONFIG.format(port=demo.port, dsn=demo.pg.dsn, redis=demo.redis.url,
                                openai_url=demo.llm.base_url("openai"), anthropic_url=demo.llm.base_url("anthropic"))
    demo.config_path.write_text(config_text)
    try:
        config = parse_config(config_text, {}, source=str(demo.config_path))
    except ConfigError as exc:  # pragma: no cover - the embedded config is tested
        print("\n".join(exc.errors), file=sys.stderr)
        return 2
    logs.configure(config.log.level, config.log.format, config.redactor())
    try:
        demo.daemon = await Daemon.start(config, extra_routes=demoroutes.routes(demo))
    except StartupError as exc:
        print(f"failsoft demo: {exc}\n  (try: .venv/bin/failsoft demo --port 0)", file=sys.stderr)
        return 2
    demo.port = demo.daemon.port
    print(demo.help(), flush=True)
    commands = asyncio.create_task(_read_commands(demo, stop))
    try:
        await demo.daemon.wait_stopped(stop)
    finally:
        commands.cancel()
        await demo.daemon.stop()
        await demo.llm.stop()
    return 0


def run_demo(port: int = 8765) -> int:
    """Start the servers, run the daemon until Ctrl-C or 'quit', then clean everything up."""
    try:
        demo = Demo(port)
        where = f"the status page will be at http://127.0.0.1:{port}/; " if port else ""
        print(f"failsoft demo: {where}starting a throw-away PostgreSQL and Redis ...", flush=True)
        demo.pg.start()
        demo.redis.start()
    except ServerError as exc:
        print(f"failsoft demo: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_main(demo))
    finally:
        demo.redis.resume()
        with contextlib.suppress(Exception):
            demo.pg.close()
        with contextlib.suppress(Exception):
            demo.redis.close()
        shutil.rmtree(demo.config_path.parent, ignore_errors=True)
        print("demo stopped; servers removed", flush=True)
