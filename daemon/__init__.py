"""failsoft's running machinery: config, schedulers and breakers, the state owner, publishers, CLI."""
