"""failsoft: a sidecar that probes an app's dependencies and publishes one service level it can degrade by.

The import root of the distribution. ``failsoft.client`` is what apps import; ``failsoft.daemon``,
``failsoft.probes`` and ``failsoft.policies`` are the sidecar (they live in the repository's top-level
``daemon/``, ``probes/`` and ``policies/`` folders, linked here); ``failsoft.devtools`` holds what the demo and
the tests run beside it. Importing this package imports nothing else.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("failsoft")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
    __version__ = "0.0.0"
