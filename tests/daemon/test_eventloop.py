"""failsoft.daemon.eventloop: which event loop ``failsoft run`` uses, from FAILSOFT_EVENT_LOOP."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from failsoft.daemon.eventloop import EventLoopError, loop_factory

HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None


def test_asyncio_forces_the_default_loop() -> None:
    """FAILSOFT_EVENT_LOOP=asyncio: asyncio's own loop (no factory), installed uvloop or not."""
    assert loop_factory({"FAILSOFT_EVENT_LOOP": "asyncio"}) == ("asyncio", None)


def test_unset_means_asyncio_even_with_uvloop_installed() -> None:
    """Unset: asyncio's own loop, installed uvloop or not (uvloop is opt-in: see the module docstring)."""
    assert loop_factory({}) == ("asyncio", None)


@pytest.mark.skipif(not HAS_UVLOOP, reason="uvloop is not installed (make venv installs it)")
def test_asking_for_uvloop_makes_a_uvloop_loop() -> None:
    """FAILSOFT_EVENT_LOOP=uvloop with uvloop installed: a factory that really makes a uvloop loop."""
    name, factory = loop_factory({"FAILSOFT_EVENT_LOOP": "uvloop"})
    assert name == "uvloop"
    if factory is not None:
        loop = factory()
        try:
            assert type(loop).__module__.startswith("uvloop")
            assert loop.run_until_complete(asyncio.sleep(0, result=7)) == 7
        finally:
            loop.close()


def test_an_unknown_loop_is_refused_with_the_choices() -> None:
    """A typo is an error naming the variable and the two choices, not a silent default."""
    with pytest.raises(EventLoopError, match="FAILSOFT_EVENT_LOOP must be asyncio or uvloop, got 'tokio'"):
        loop_factory({"FAILSOFT_EVENT_LOOP": "tokio"})


def test_asking_for_uvloop_without_it_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """FAILSOFT_EVENT_LOOP=uvloop where uvloop is not installed: an error with the pip command; unset falls back to
    the default loop."""
    monkeypatch.setattr(importlib.util, "find_spec", lambda _name: None)
    assert loop_factory({}) == ("asyncio", None)
    with pytest.raises(EventLoopError, match=r"failsoft\[uvloop\]"):
        loop_factory({"FAILSOFT_EVENT_LOOP": "uvloop"})
