"""Development tools that run beside the daemon, never inside it: the demo, the LLM provider simulator and
throw-away local PostgreSQL and Redis servers. The daemon never imports this package."""
