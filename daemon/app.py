"""The daemon's lifecycle in three phases: startup, main loop, shutdown (as uvicorn does).

Signals only set an event; shutdown is bounded so that SIGTERM ends the process within 5 seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp
import structlog
from aiohttp import web

from failsoft.daemon import api, fleetapi, httpguard, ofrep, openapi, statuspage, stream
from failsoft.daemon.breaker import Breaker
from failsoft.daemon.clock import Clock, SystemClock
from failsoft.daemon.config import Config
from failsoft.daemon.hub import Hub
from failsoft.daemon.metrics import Metrics
from failsoft.daemon.publish_redis import RedisPublisher
from failsoft.daemon.report import Reports
from failsoft.daemon.scheduler import DependencyScheduler
from failsoft.daemon.state import ServiceState, run_owner
from failsoft.policies.cadence import Wakeups
from failsoft.policies.model import DependencyStatus
from failsoft.probes import KINDS
from failsoft.probes import http as http_probe
from failsoft.probes.base import Probe, ProbeHooks

if TYPE_CHECKING:
    from failsoft.daemon.fleet import Fleet

log = structlog.get_logger("failsoft.daemon")

SHUTDOWN_GRACE = 3.0  # in-flight answers get this long; the whole shutdown stays under 5 s


class StartupError(Exception):
    """The daemon cannot start (the port is taken, ...); the message says what to do."""


@dataclass
class Daemon:
    """One running failsoft: its runtime, schedulers and HTTP server."""

    config: Config
    clock: Clock
    runtime: api.Runtime
    state: ServiceState
    schedulers: list[DependencyScheduler]
    runner: web.AppRunner
    metrics: Metrics
    publisher: RedisPublisher | None = None
    http_session: aiohttp.ClientSession | None = None
    port: int = 0
    fleet: Fleet | None = None

    @classmethod
    async def start(cls, config: Config, clock: Clock | None = None,
                    extra_routes: Sequence[web.RouteDef] = ()) -> Daemon:
        """Startup: build everything, bind the port, then start the owner and the probes.

        ``extra_routes``: more HTTP routes (``failsoft demo`` adds its fault switches; ``failsoft run`` none).
        """
        clock = clock or SystemClock()
        for warning in config.warnings:  # deprecated keys, suspicious values: check-config prints the same
            log.warning("config_warning", warning=warning)
        hub = Hub()
        inbox: asyncio.Queue = asyncio.Queue()  # type: ignore[type-arg]
        heartbeat = config.publish.heartbeat if config.publish else 5.0
        state = ServiceState(config, clock, validity=3 * heartbeat)
        runtime = api.Runtime(config=config, hub=hub, inbox=inbox)
        redact = config.redactor()
        uses_http = any(d.kind in ("http", "llm") for d in config.dependencies.values())
        http_session = http_probe.client_session() if uses_http else None  # one pool for the HTTP-based probes
        wakeups = Wakeups()  # steady probes of all dependencies start together: one wake-up, not one each
        metrics = Metrics(config, hub, clock=clock, wakeups=wakeups)
        hub.add_listener(metrics.observe)

        def make_scheduler(name: str, report: Callable[[DependencyStatus], None]) -> DependencyScheduler:
            dep = config.dependencies[name]
            return DependencyScheduler(
                Breaker(dep.name, dep.kind, dep.settings),
                _probe_factory(dep.kind, dep.options, dep.settings.timeout, http_session),
                report,
                clock,
                redact,
                on_probe=metrics.on_probe,
                wakeups=wakeups,
            )

        # Fleet mode: the fleet runs the shared dependencies' schedulers while this pod is their prober.
        fleet = _make_fleet(config, state.boot, inbox.put_nowait, clock, make_scheduler)
        report = inbox.put_nowait if fleet is None else fleet.on_own_result
        schedulers = [make_scheduler(name, report) for name in config.dependencies
                      if fleet is None or name not in fleet.by_dependency]
        targets = {s.name: s for s in schedulers} | (fleet.passive_targets() if fleet is not None else {})
        reports = Reports(config, targets, clock, metrics)
        streams = stream.EventStreams(max_streams=config.http.max_streams)
        app = api.build_app(runtime, [*stream.routes(streams), *metrics.routes(), *ofrep.routes(), *reports.routes(),
                                      *statuspage.routes(), *openapi.routes(config.policy.levels, config.dependencies),
                                      *extra_routes, *fleetapi.routes(fleet, config.service)])
        # handler_cancellation: a client that hangs up ends its handler at once, so an SSE stream or a long-poll
        # of a departed client releases its subscription now, not at its next keep-alive write.
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=SHUTDOWN_GRACE,
                               handler_cancellation=True, **httpguard.HANDLER_LIMITS)
        await runner.setup()
        if not config.http.cors_origins and runner.server is not None:
            runner.server.request_handler = api.front(runtime, runner.server.request_handler)
        host, port = config.http.host, config.http.port
        try:
            site = await _listen(runner, host, port)
        except StartupError:
            # Nothing has started yet: release what was built so far.
            await runner.cleanup()
            await metrics.aclose()
            if http_session is not None:
                await http_session.close()
            raise
        bound = _bound_port(runner) or port
        publisher = (RedisPublisher(config.publish, config.service, hub, metrics, clock)
                     if config.publish and fleet is None else None)  # in fleet mode the leader publishes
        daemon = cls(config, clock, runtime, state, schedulers, runner, metrics, publisher, http_session, bound,
                     fleet)
        if publisher is not None:
            await publisher.start()
        if fleet is not None:
            runtime.tasks.update(_start_fleet(fleet, config, hub, metrics, clock))
        runtime.tasks["owner"] = asyncio.create_task(run_owner(state, inbox, hub, refresh=heartbeat), name="owner")
        for s in schedulers:
            runtime.tasks[f"probe:{s.name}"] = asyncio.create_task(s.run(), name=f"probe:{s.name}")
        runtime.tasks["reports"] = asyncio.create_task(reports.run(), name="reports")
        log.info("listening", host=host, port=bound, url=f"http://{_url_host(host)}:{bound}",
                 event_loop=type(asyncio.get_running_loop()).__module__.partition(".")[0],
                 service=config.service, dependencies=list(config.dependencies),
                 max_connections=site.max_connections, fd_limit=site.fd_limit)
        return daemon

    async def wait_stopped(self, stop: asyncio.Event) -> None:
        """Main loop: run until ``stop`` is set, or a core task dies (then stop too, loudly)."""
        stop_task = asyncio.create_task(stop.wait())
        tasks = {stop_task, *self.runtime.tasks.values()}
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        stop_task.cancel()
        for task in done:
            if task is not stop_task and not task.cancelled() and task.exception() is not None:
                log.error("task_crashed", task=task.get_name(), error=repr(task.exception()))
                raise RuntimeError(f"task {task.get_name()} crashed") from task.exception()

    async def stop(self) -> None:
        """Shutdown: stop probing, finish answers in flight, close connections."""
        self.runtime.stopping.set()
        self.runtime.hub.drain()
        tasks = list(self.runtime.tasks.values())
        for task in tasks:
            task.cancel()
        # Bounded: a task that lost its cancellation must not hold the process past its 5 seconds.
        _, stuck = await asyncio.wait(tasks, timeout=1.0) if tasks else (set(), set())
        if stuck:
            log.warning("tasks_not_stopped", tasks=sorted(t.get_name() for t in stuck))
        closing = [s.aclose() for s in self.schedulers]
        if self.publisher is not None:
            closing.append(self.publisher.aclose())
        if self.fleet is not None:
            closing.append(self.fleet.aclose())
        await asyncio.gather(*closing, return_exceptions=True)
        if self.http_session is not None:
            await self.http_session.close()
        await self.metrics.aclose()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.runner.cleanup(), SHUTDOWN_GRACE + 0.5)
        log.info("stopped")


def _make_fleet(config: Config, boot: str, inbox: Callable[[DependencyStatus], None], clock: Clock,
                make_scheduler: Callable[[str, Callable[[DependencyStatus], None]], DependencyScheduler],
                ) -> Fleet | None:
    """Fleet mode's coordinator when the config has a ``fleet`` section. Its modules are imported only then: a
    daemon without a fleet is ~1 MiB smaller."""
    if not config.fleet:
        return None
    from failsoft.daemon.fleet import Fleet

    return Fleet(config, boot, inbox, clock, make_scheduler)


def _start_fleet(fleet: Fleet, config: Config, hub: Hub, metrics: Metrics, clock: Clock
                 ) -> dict[str, asyncio.Task[None]]:
    """The fleet's tasks (leases, probers, the publisher), its metrics registered."""
    from failsoft.daemon.fleetmetrics import FleetMetrics
    from failsoft.daemon.fleetpub import FleetPublisher

    FleetMetrics(metrics, fleet)
    return {**fleet.start(), "fleet:publish": FleetPublisher(config, fleet, hub, clock).start()}


def _probe_factory(
    kind: str, options: object, timeout: float, http_session: aiohttp.ClientSession | None
) -> Callable[[Callable[[], None]], Probe]:
    def make(wake: Callable[[], None]) -> Probe:
        return KINDS[kind].create(options, timeout, ProbeHooks(connection_lost=wake, http_session=http_session))

    return make


async def _listen(runner: web.AppRunner, host: str, port: int) -> httpguard.GuardedSite:
    """Listen, capped below the descriptor limit; StartupError saying what to do when the address cannot be had."""
    try:
        site = httpguard.GuardedSite(runner, host, port)
        await site.start()
    except OSError as exc:
        hint = "choose another port in http.listen, or 0 for a free one"
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(f"http.listen {host}:{port}: the address is already in use ({hint})") from None
        raise StartupError(f"http.listen {host}:{port}: cannot listen ({exc.strerror or exc})") from None
    return site


def _bound_port(runner: web.AppRunner) -> int | None:
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            return int(addr[1])
    return None


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - only turning a bind address into a URL to print
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


async def serve(config: Config, *, ready: Callable[[Daemon], None] | None = None) -> None:
    """Run the daemon until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    daemon = await Daemon.start(config)
    if ready is not None:
        ready(daemon)
    try:
        await daemon.wait_stopped(stop)
    finally:
        log.info("stopping")
        await daemon.stop()
