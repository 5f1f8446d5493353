"""The ``failsoft`` command: run, check-config, status, watch, demo."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from failsoft import __version__
from failsoft.daemon.terminal import format_status

EXIT_OK, EXIT_NOT_FULL, EXIT_CONFIG, EXIT_UNREACHABLE = 0, 1, 2, 3
DEFAULT_URL = "http://127.0.0.1:8765"
# Top-level modules of the `daemon` extra: missing one means the client-only install (see docs/client.md).
DAEMON_MODULES = frozenset({"yaml", "structlog", "asyncpg", "redis", "orjson", "opentelemetry", "prometheus_client"})


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run one subcommand; returns the exit code."""
    parser = argparse.ArgumentParser(prog="failsoft", description="Service-level sidecar: probes dependencies "
                                     "and publishes one service level for the app to degrade by.")
    parser.add_argument("--version", action="version", version=f"failsoft {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", help="config file (default: $FAILSOFT_CONFIG, else ./failsoft.yaml)")
    check = sub.add_parser("check-config", help="validate a config file; exit 2 listing every error")
    check.add_argument("path", nargs="?", help="config file (default: $FAILSOFT_CONFIG, else ./failsoft.yaml)")
    for name, text in (("status", "print the level and the dependencies; exit 0 full, 1 otherwise, 3 unreachable"),
                       ("watch", "follow the event stream, one line per event"),
                       ("fleet", "print the fleet: leader, probers and live pods; exit 3 unreachable")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--url", default=os.environ.get("FAILSOFT_URL", DEFAULT_URL),
                       help=f"the daemon's address (default: $FAILSOFT_URL, else {DEFAULT_URL})")
    demo = sub.add_parser("demo", help="run the daemon against throw-away local PostgreSQL and Redis")
    demo.add_argument("--port", type=int, default=8765, help="HTTP port for the daemon (default 8765)")
    args = parser.parse_args(argv)
    handler = {"run": _run, "check-config": _check, "status": _status, "watch": _watch, "demo": _demo,
               "fleet": _fleet}[args.command]
    try:
        return handler(args)
    except ModuleNotFoundError as exc:
        # `pip install failsoft` is the app's client (status and watch work with it); the sidecar is an extra.
        if exc.name is None or exc.name.split(".")[0] not in DAEMON_MODULES:
            raise
        print(f"failsoft {args.command}: the daemon's dependencies are not installed (no module {exc.name!r}); "
              "install them with: pip install 'failsoft[daemon]'", file=sys.stderr)
        return EXIT_CONFIG


def _load(path: str | None) -> Any:
    from failsoft.daemon.config import ConfigError, load_config, resolve_path

    config_path = resolve_path(path)
    try:
        return load_config(config_path)
    except ConfigError as exc:
        print(f"failsoft: {config_path}: {len(exc.errors)} problem(s) in the configuration:", file=sys.stderr)
        for e in exc.errors:
            print(f"  {e}", file=sys.stderr)
        return None


def _run(args: argparse.Namespace) -> int:
    from failsoft.daemon import eventloop, logs
    from failsoft.daemon.app import StartupError, serve

    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    logs.configure(config.log.level, config.log.format, config.redactor())
    try:
        _, factory = eventloop.loop_factory(os.environ)
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(serve(config))
    except (StartupError, eventloop.EventLoopError) as exc:
        print(f"failsoft: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    from failsoft.daemon.config import resolve_path, summary

    config = _load(args.path)
    if config is None:
        return EXIT_CONFIG
    print(f"{resolve_path(args.path)}: OK")
    for line in summary(config):
        print(line)
    return EXIT_OK


def _fetch_state(url: str) -> dict[str, Any] | None:
    # _status accepts http(s) URLs only, so urlopen cannot be pointed at file: or custom schemes.
    request = urllib.request.Request(  # noqa: S310
        url.rstrip("/") + "/service-level", headers={"Accept": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310
            return dict(json.load(resp))
    except urllib.error.HTTPError as exc:
        if exc.code == 503:  # starting up: the body is still a State with level "unknown"
            return dict(json.load(exc))
        return None
    except (OSError, ValueError):
        return None


def _status(args: argparse.Namespace) -> int:
    if not args.url.startswith(("http://", "https://")):
        print(f"failsoft: --url must start with http:// or https://, got {args.url!r}", file=sys.stderr)
        return EXIT_UNREACHABLE
    state = _fetch_state(args.url)
    if state is None:
        print(f"failsoft: cannot reach the daemon at {args.url}", file=sys.stderr)
        return EXIT_UNREACHABLE
    print(format_status(state))
    best = (state.get("levels") or ["full"])[0]
    return EXIT_OK if state.get("level") == best else EXIT_NOT_FULL


def _watch(args: argparse.Namespace) -> int:
    """Follow the daemon's events with the app client, one line each; 3 if it cannot be reached, 0 on Ctrl-C."""
    from failsoft.client import ServiceLevelClient, format_change

    async def follow() -> int:
        # Our own handlers, as `failsoft run` has: a SIGINT ignored by the parent (a background job of a
        # script) would otherwise never become KeyboardInterrupt, and Ctrl-C or SIGTERM must end the watch.
        main = asyncio.current_task()
        assert main is not None
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, main.cancel)
        async with ServiceLevelClient(args.url) as client:
            changes = client.changes()  # registered before connecting, so the first snapshot is printed too
            if not await client.wait_ready(10.0, attempts=1):
                print(f"failsoft: cannot reach the daemon at {args.url} ({client.last_error})", file=sys.stderr)
                return EXIT_UNREACHABLE
            async for change in changes:  # ends only with the process: lost connections are retried
                print(format_change(change), flush=True)
        return EXIT_OK

    try:
        return asyncio.run(follow())
    except (asyncio.CancelledError, KeyboardInterrupt, BrokenPipeError):  # Ctrl-C, SIGTERM, or `| head` left
        return EXIT_OK


def _fleet(args: argparse.Namespace) -> int:
    from failsoft.daemon.fleetcli import show_fleet

    return show_fleet(args.url)


def _demo(args: argparse.Namespace) -> int:
    from failsoft.devtools.demo import run_demo

    return run_demo(port=args.port)
