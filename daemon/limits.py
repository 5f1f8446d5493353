"""Every bound on untrusted input, in one place, each with the reason for its value.

Untrusted input is anything a client of the HTTP port sends (no token is needed to connect) and anything read
from a file or an environment variable named by the configuration. The rule behind every number here: nothing
such input does may cost the event loop more than a small constant per byte, hold a descriptor the probes need,
or grow memory without bound. ``docs/security.md`` lists these in a table; keep the two in step.
"""

from __future__ import annotations

# -- HTTP server -----------------------------------------------------------------------------------------

# Longest request line (method, target, version) and longest single header line. aiohttp's own parser refuses
# longer ones with 400; our URLs are short and a browser's Cookie header for 127.0.0.1 stays well below 8 KiB.
HTTP_MAX_LINE = 8190
HTTP_MAX_FIELD = 8190
# A request with a body (POST, PUT, PATCH, DELETE) must be handled, body included, within this: a body trickled
# a byte at a time would otherwise hold its connection, busy and so never evicted, for ever (408 at the deadline).
HTTP_BODY_TIMEOUT = 10.0
# More headers than any real client sends: each is parsed and kept in memory for the life of the request.
HTTP_MAX_HEADERS = 100
# Largest request body (override and report bodies); aiohttp answers 413 above it without buffering more.
HTTP_MAX_BODY = 64 * 1024
# A connection that has not completed a request (headers included) this long after it opened or after its last
# answer is closed: it bounds idle keep-alive connections and slowloris clients that trickle header bytes.
# (aiohttp starts this timer at connection time and closes any connection still waiting for a whole request.)
HTTP_IDLE_TIMEOUT = 10.0
# Most open HTTP connections at once: above the 10,000 event streams the SSE endpoint allows, so the stream cap
# answers first. The real cap is lower when the descriptor limit is: see FD_RESERVE.
HTTP_MAX_CONNECTIONS = 12_000
# Descriptors kept free for everything that is not an HTTP client: probe connections (a new PostgreSQL
# connection per session check, the HTTP client pool, Redis), the Redis publisher, logs, DNS, and one batch of
# accepts (see HTTP_ACCEPT_BACKLOG). The HTTP server never holds more than (soft RLIMIT_NOFILE - FD_RESERVE)
# connections, so a flood of clients cannot make a probe fail with EMFILE and publish a false outage.
FD_RESERVE = 256
# How many connections asyncio accepts in one loop iteration (asyncio's `backlog`) before the cap
# sees any of them (the protocol is made in the next iteration, and a closed connection's descriptor is freed one
# iteration after close()): at most 2 x HTTP_ACCEPT_BACKLOG descriptors are in flight beyond the cap, so
# FD_RESERVE = 2 x 64 for them + 128 for the probes.
HTTP_ACCEPT_BACKLOG = 64
# The kernel's queue of connections not yet accepted (the listen backlog proper, capped by net.core.somaxconn):
# long, since a queued connection costs the daemon no descriptor, and a full queue makes clients retry a second
# later.
HTTP_LISTEN_QUEUE = 4096
# Below this many connections the server would be useless; the daemon refuses to start instead.
HTTP_MIN_CONNECTIONS = 16
# The soft RLIMIT_NOFILE the daemon raises itself to at start (never above the hard limit): every connection the
# cap allows plus the reserve.
FD_TARGET = HTTP_MAX_CONNECTIONS + FD_RESERVE

# -- Logs ------------------------------------------------------------------------------------------------

# Longest text of one log field (a message, an error, a rendered traceback); longer text is cut with a marker.
# Redaction runs on at most LOG_MAX_VALUE + LOG_REDACT_MARGIN characters, so it is bounded per line, and a
# secret shorter than the margin that begins before the cut is still masked whole.
LOG_MAX_VALUE = 4096
LOG_REDACT_MARGIN = 512
# Client errors (malformed requests) and repeated library errors (accept() failures): at most LOG_BURST lines
# per LOG_PERIOD seconds per kind; the next line after a quiet spell says how many were suppressed.
LOG_BURST = 5
LOG_PERIOD = 10.0
# Longest excerpt of a malformed request quoted in a log line (escaped, so control bytes stay visible).
LOG_CLIENT_EXCERPT = 120

# -- Query parameters and headers -------------------------------------------------------------------------

# An index or limit has at most 18 digits: it fits in a signed 64-bit integer and int() stays cheap.
MAX_NUMBER_DIGITS = 18
# A duration text (``wait=``, ``ttl``, config durations) longer than this is refused before it is parsed.
MAX_DURATION_CHARS = 64

# -- Configuration -----------------------------------------------------------------------------------------

# A config or policy file larger than this is refused before it is parsed (a real one is a few KiB). This also
# bounds the work of the YAML parser, which is pure Python.
CONFIG_MAX_BYTES = 256 * 1024
# Deepest nesting of mappings and lists: a real config nests 4 levels deep; PyYAML's composer recurses per level.
CONFIG_MAX_DEPTH = 32
# Most nodes of the document once every alias is expanded: an alias bomb (a list of 9 aliases of a list of 9
# aliases ...) is a few hundred bytes that expand to millions of nodes.
CONFIG_MAX_NODES = 50_000
# Longest scalar (a string after ${VAR} expansion, a DSN, a token, a name): a 10 MB admin_token would otherwise
# be copied and scanned by every redaction.
CONFIG_MAX_STRING = 4096
# Longest number written in the config: more digits would overflow a float or hit Python's int() digit limit.
CONFIG_MAX_NUMBER_CHARS = 32
# check-config lists at most this many errors (the rest are counted): 20,000 unknown keys need one fix, not
# 20,000 lines.
CONFIG_MAX_ERRORS = 100

# -- Probe periods (seconds) --------------------------------------------------------------------------------

# Shortest probe period (interval, fast_interval, down_interval.initial): at most 20 probes per second per
# dependency, whatever the config says (``interval: 1e-9`` used to probe 1,600 times a second).
MIN_PERIOD = 0.05
# Shortest probe timeout: below 10ms a probe of a healthy loopback service times out on a busy machine.
MIN_TIMEOUT = 0.01
# Longest period or timeout accepted: a day. Longer is a typo, and huge values overflow the event loop's timers.
MAX_PERIOD = 86_400.0

# The largest down_interval.multiplier, and the largest exponent the backoff raises it to: 10**64 is far past any
# max, and float powers beyond ~2**1023 raise OverflowError instead of growing.
MAX_BACKOFF_MULTIPLIER = 10.0
MAX_BACKOFF_EXPONENT = 64

# -- PostgreSQL ----------------------------------------------------------------------------------------------

# How often a running PostgreSQL probe opens a whole new session (startup, authentication, a query) to see that
# the server still admits new clients ("too many clients already"): the kept connection cannot see it. Each
# check costs the server one backend fork and, with log_connections=on, log lines; a few seconds keeps the cost
# low and the detection within 10 s.
POSTGRES_SESSION_CHECK_PERIOD = 5.0
