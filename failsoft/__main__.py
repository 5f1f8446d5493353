"""``python -m failsoft`` is the ``failsoft`` command."""

from failsoft.daemon.cli import main

raise SystemExit(main())
