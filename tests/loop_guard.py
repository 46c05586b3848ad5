"""Guard for the session's shared event loop: a socket closed behind the loop's back.

Every async test shares one event loop (``asyncio_default_test_loop_scope = "session"``). When code closes a
socket that the loop still watches — without ``remove_reader``/``remove_writer`` — the kernel drops it from the
epoll set but the loop's selector keeps the entry. The next socket that gets the same file-descriptor number then
fails in an unrelated test (``FileNotFoundError`` from ``epoll_ctl(MOD)``, or a read that never wakes).

:func:`stale_registrations` finds such entries (the kernel's epoll set no longer has the fd) and
:func:`drop_stale` removes them, so one leak cannot break a later test; the ``loop_guard`` fixture in
``tests/conftest.py`` runs it after every test and names the test that leaked in a warning.
"""

from __future__ import annotations

import asyncio
import errno
import select
import selectors
import warnings
from typing import Any

_EPOLL = getattr(selectors, "EpollSelector", None)


def _epoll_mask(events: int) -> int:
    mask = 0
    if events & selectors.EVENT_READ:
        mask |= select.EPOLLIN
    if events & selectors.EVENT_WRITE:
        mask |= select.EPOLLOUT
    return mask


def stale_registrations(loop: asyncio.AbstractEventLoop) -> list[selectors.SelectorKey]:
    """The selector entries whose file descriptor is no longer in the kernel's epoll set (closed, maybe reused)."""
    selector: Any = getattr(loop, "_selector", None)
    if _EPOLL is None or not isinstance(selector, _EPOLL):
        return []
    stale = []
    for key in list(selector.get_map().values()):
        try:  # re-arming with the same events is a no-op for a live registration
            selector._selector.modify(key.fd, _epoll_mask(key.events))
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.EBADF):
                stale.append(key)
    return stale


def drop_stale(loop: asyncio.AbstractEventLoop) -> list[int]:
    """Remove stale entries from the loop's selector; the file descriptors that were stale."""
    selector: Any = getattr(loop, "_selector", None)
    dropped = []
    for key in stale_registrations(loop):
        selector.unregister(key.fd)  # EpollSelector ignores the kernel's "not registered"
        dropped.append(key.fd)
    return dropped


def guard(loop: asyncio.AbstractEventLoop, when: str) -> None:
    """:func:`drop_stale`, and a ResourceWarning naming ``when`` (the test) if there was anything to drop."""
    dropped = drop_stale(loop)
    if dropped:
        warnings.warn(f"{when}: sockets closed behind the event loop's back (fds {dropped})", ResourceWarning,
                      stacklevel=2)
