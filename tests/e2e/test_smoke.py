"""The harness itself: a daemon against real servers reaches the best level."""

from __future__ import annotations


def test_daemon_reaches_full_against_real_servers(run_daemon, postgres, redis_server) -> None:
    """With PostgreSQL and Redis up, the daemon is ready and publishes `full` with both healthy."""
    d = run_daemon(f"""
http: {{listen: "127.0.0.1:0"}}
dependencies:
  db: {{kind: postgres, dsn: "{postgres.dsn}"}}
  cache: {{kind: redis, url: "{redis_server.url}"}}
""")
    state = d.wait_state(lambda s: s["level"] == "full", what="level full")
    assert state["dependencies"]["db"]["state"] == "healthy"
    assert state["dependencies"]["cache"]["breaker"] == "closed"
