"""The soak: the daemon process against flapping PostgreSQL, Redis and LLM simulator faults for a while, its
resources sampled every ``SAMPLE_EVERY`` seconds, and a verdict on whether any of them grows without bound.

Series: anonymous resident memory (``RssAnon``: the heap; file-backed pages of the libraries come and go with the
machine's page cache and say nothing about a leak) and open file descriptors (read from ``/proc/PID``), asyncio
tasks and event-loop lag (from the daemon's ``/metrics``). A series "grows" when the least-squares slope fitted
over the samples after the warm-up exceeds its rate limit *and* the growth that slope predicts over the measured
window exceeds its floor: the rate catches a slow leak in a long soak, the floor keeps the noise of a one-minute
run from failing it. Used by ``tests/soak/test_soak.py`` (one minute in ``make test``, ``SOAK_MINUTES`` in
``make soak``).
"""

from __future__ import annotations

import contextlib
import http.client
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from prometheus_client.parser import text_string_to_metric_families
from support import SECRETS, DaemonProcess, request

from failsoft.devtools.llmsim import ThreadedSimulator
from failsoft.devtools.localservers import PostgresServer, RedisServer

SAMPLE_EVERY = 10.0  # seconds between samples
FLAP_EVERY = 3.0  # seconds between fault steps
WARMUP = 0.25  # the first quarter of the run (at least one sample) is not fitted: caches and pools fill up then


@dataclass(frozen=True)
class Limit:
    """When a series counts as growing: slope above ``per_hour`` and predicted growth above ``floor``."""

    name: str
    unit: str
    per_hour: float
    floor: float


LIMITS = (
    Limit("rss_anon_mb", "MB", per_hour=30.0, floor=12.0),
    Limit("fds", "fds", per_hour=20.0, floor=10.0),
    Limit("tasks", "tasks", per_hour=40.0, floor=20.0),
    Limit("lag_s", "s", per_hour=1.0, floor=0.5),
)


@dataclass(frozen=True)
class Sample:
    """One look at the daemon, ``t`` seconds into the soak."""

    t: float
    rss_anon_mb: float
    fds: int
    tasks: float
    lag_s: float


@dataclass(frozen=True)
class Verdict:
    """A series' fitted slope, its predicted growth over the window, and whether that is growth without bound."""

    limit: Limit
    slope_per_hour: float
    growth: float
    grows: bool


@dataclass
class SoakResult:
    """The samples, the verdicts, and what the run did."""

    samples: list[Sample]
    verdicts: list[Verdict]
    fault_steps: int
    stream_reconnects: int
    plot: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[Verdict]:
        """The series that grow without bound."""
        return [v for v in self.verdicts if v.grows]


def fit_slope(xs: list[float], ys: list[float]) -> float:
    """The least-squares slope of ``ys`` over ``xs`` (0 with fewer than two distinct xs)."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def judge(samples: list[Sample]) -> list[Verdict]:
    """The verdict on each series, fitted on the samples after the warm-up."""
    if not samples:
        return []
    end = samples[-1].t
    kept = [s for s in samples[1:] if s.t >= end * WARMUP] or samples
    xs = [s.t for s in kept]
    window = (xs[-1] - xs[0]) if len(xs) > 1 else 0.0
    out = []
    for limit in LIMITS:
        slope = fit_slope(xs, [float(getattr(s, limit.name)) for s in kept])  # per second
        per_hour, growth = slope * 3600, slope * window
        out.append(Verdict(limit, per_hour, growth, per_hour > limit.per_hour and growth > limit.floor))
    return out


# -------------------------------------------------------------------------------------------------------
# Sampling the process


def proc_rss_anon_mb(pid: int) -> float:
    """Anonymous resident memory of ``pid`` in MB (RssAnon from /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no RssAnon for pid {pid}")


def proc_fds(pid: int) -> int:
    """Open file descriptors of ``pid``."""
    return sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())


def scrape(url: str) -> dict[str, float]:
    """The daemon's unlabelled gauges from ``/metrics`` (name -> value)."""
    status, body, _ = request(f"{url}/metrics", timeout=10)
    if status != 200 or not isinstance(body, str):
        raise RuntimeError(f"/metrics answered {status}")
    out = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if not sample.labels:
                out[sample.name] = float(sample.value)
    return out


def take_sample(d: DaemonProcess, t: float) -> Sample:
    """Anonymous memory and fds from /proc, tasks and loop lag from /metrics."""
    assert d.proc is not None
    gauges = scrape(d.url)
    return Sample(t, proc_rss_anon_mb(d.proc.pid), proc_fds(d.proc.pid), gauges.get("failsoft_asyncio_tasks", -1.0),
                  gauges.get("failsoft_event_loop_lag_seconds", -1.0))


# -------------------------------------------------------------------------------------------------------
# The faults and the readers


class Flapper:
    """A thread that keeps breaking and healing PostgreSQL, Redis and the LLM, one step every ``FLAP_EVERY`` s."""

    def __init__(self, pg: PostgresServer, rd: RedisServer, sim: ThreadedSimulator) -> None:
        self.pg, self.rd, self.sim = pg, rd, sim
        self.steps = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-flapper", daemon=True)
        self._steps: list[Callable[[], None]] = [
            self.pg.kill, self.pg.start,
            lambda: self.sim.set_mode("llm", "error"), self.rd.pause,
            lambda: self.sim.set_mode("llm", "rate_limit", retry_after=2), self.rd.resume,
            lambda: self.sim.set_mode("llm", "hang", duration=2), self.rd.kill,
            lambda: self.sim.set_mode("llm", "reset"), self.rd.start,
            lambda: self.sim.set_mode("llm", "healthy"),
        ]

    def start(self) -> None:
        """Begin flapping."""
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(FLAP_EVERY):
            step = self._steps[self.steps % len(self._steps)]
            try:
                step()
            except Exception as exc:
                self.errors.append(repr(exc))
            self.steps += 1

    def stop(self) -> None:
        """Stop flapping and leave every server running."""
        self._stop.set()
        self._thread.join(30)
        for heal in (self.rd.resume, lambda: self.sim.set_mode("llm", "healthy")):
            with contextlib.suppress(Exception):
                heal()
        for server in (self.pg, self.rd):
            if server.pid is None:
                with contextlib.suppress(Exception):
                    server.start()


class StreamReader:
    """A thread that follows the event stream for ``HOLD`` seconds at a time, hangs up and reconnects (as a
    browser tab that comes and goes would): each open and close must leave nothing behind in the daemon."""

    HOLD = 5.0

    def __init__(self, url: str) -> None:
        self.host, port = urlsplit(url).netloc.split(":")
        self.port = int(port)
        self.reconnects = 0
        self.messages = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-stream", daemon=True)

    def start(self) -> None:
        """Begin reading."""
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            conn = http.client.HTTPConnection(self.host, self.port, timeout=2)
            opened = time.monotonic()
            try:
                conn.request("GET", "/service-level/events")
                resp = conn.getresponse()
                while not self._stop.is_set() and time.monotonic() - opened < self.HOLD:
                    line = resp.readline()
                    if not line:
                        break
                    self.messages += line.startswith(b"event:")
            except OSError:
                pass  # a read that waited 2 s for the next event: hang up and come back, as planned
            finally:
                conn.close()
            self.reconnects += 1

    def stop(self) -> None:
        """Stop reading."""
        self._stop.set()
        self._thread.join(25)


def daemon_config(pg: PostgresServer, rd: RedisServer, sim: ThreadedSimulator) -> str:
    """db, cache and an LLM, fast probing, the level published to the cache Redis as well."""
    llm = sim.dependency_config("llm")
    return f"""
http: {{listen: "127.0.0.1:0"}}
publish: {{redis: cache, heartbeat: 1s}}
defaults:
  interval: 250ms
  fast_interval: 100ms
  timeout: 1s
  down_interval: {{initial: 200ms, max: 1s}}
dependencies:
  db: {{kind: postgres, dsn: "{pg.dsn}"}}
  cache: {{kind: redis, url: "{rd.url}"}}
  llm: {{kind: llm, provider: openai, base_url: "{llm['base_url']}", api_key: "{llm['api_key']}"}}
"""


def run_soak(minutes: float, tmp: Path, out_dir: Path, log: Callable[[str], None] = print) -> SoakResult:
    """Run the soak for ``minutes`` and judge it; writes ``soak.png`` into ``out_dir``."""
    pg, rd = PostgresServer(), RedisServer()
    sim = ThreadedSimulator({"llm": "openai"}).start()
    SECRETS.update({pg.password, rd.password, str(sim.dependency_config("llm")["api_key"])})
    pg.start()
    rd.start()
    d = DaemonProcess(daemon_config(pg, rd, sim), tmp)
    flapper: Flapper | None = None
    reader: StreamReader | None = None
    try:
        d.start()
        flapper, reader = Flapper(pg, rd, sim), StreamReader(d.url)
        flapper.start()
        reader.start()
        began = time.monotonic()
        samples = [take_sample(d, 0.0)]
        log(f"soak: {minutes:g} min, a sample every {SAMPLE_EVERY:g} s, a fault step every {FLAP_EVERY:g} s")
        while (elapsed := time.monotonic() - began) < minutes * 60:
            time.sleep(min(SAMPLE_EVERY - elapsed % SAMPLE_EVERY, minutes * 60 - elapsed) + 0.001)
            samples.append(take_sample(d, time.monotonic() - began))
            s = samples[-1]
            log(f"  t={s.t:6.0f}s rss_anon={s.rss_anon_mb:6.1f} MB fds={s.fds:4d} tasks={s.tasks:4.0f} "
                f"lag={s.lag_s:.3f} s")
        assert d.proc is not None and d.proc.poll() is None, "the daemon died during the soak"
    finally:
        if reader is not None:
            reader.stop()
        if flapper is not None:
            flapper.stop()
        d.stop()
        sim.stop()
        pg.close()
        rd.close()
    result = SoakResult(samples, judge(samples), flapper.steps if flapper else 0,
                        reader.reconnects if reader else 0)
    if flapper is not None and flapper.errors:
        result.notes.append(f"fault steps that failed: {flapper.errors[:5]}")
    result.plot = plot(samples, out_dir / "soak.png")
    return result


def plot(samples: list[Sample], path: Path) -> Path:
    """A small PNG: the four series over time, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(4, 1, figsize=(6, 7), sharex=True)
    ts = [s.t / 60 for s in samples]
    for ax, limit in zip(axes, LIMITS, strict=True):
        ax.plot(ts, [getattr(s, limit.name) for s in samples], marker=".")
        ax.set_ylabel(f"{limit.name} ({limit.unit})")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("minutes")
    fig.suptitle("failsoft soak")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def report(result: SoakResult) -> list[str]:
    """The verdicts as text lines."""
    lines = [f"soak: {len(result.samples)} samples, {result.fault_steps} fault steps, "
             f"{result.stream_reconnects} stream reconnects; plot: {result.plot}"]
    lines += [f"  {v.limit.name:7s} slope {v.slope_per_hour:+9.2f} {v.limit.unit}/h, fitted growth "
              f"{v.growth:+8.2f} {v.limit.unit} (limits {v.limit.per_hour:g}/h and {v.limit.floor:g}): "
              + ("GROWS" if v.grows else "bounded") for v in result.verdicts]
    lines += result.notes
    return lines


__all__ = ["LIMITS", "Sample", "SoakResult", "fit_slope", "judge", "report", "run_soak"]

