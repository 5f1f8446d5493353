"""``python -m daemon`` is the ``failsoft`` command."""

from daemon.cli import main

raise SystemExit(main())
