"""The shared event loop's guard (tests/loop_guard.py): a socket closed behind the loop's back is found and dropped,
so the next socket that gets its file-descriptor number can be watched again."""

from __future__ import annotations

import asyncio
import socket

from tests.loop_guard import drop_stale, stale_registrations


async def test_a_socket_closed_behind_the_loops_back_is_dropped_and_its_number_usable_again() -> None:
    loop = asyncio.get_running_loop()
    left, right = socket.socketpair()
    loop.add_writer(left.fileno(), lambda: None)
    fd = left.fileno()
    left.close()  # without remove_writer: the selector still has the entry, the kernel does not
    right.close()
    try:
        assert fd in [key.fd for key in stale_registrations(loop)]
        assert fd in drop_stale(loop)
        assert stale_registrations(loop) == []
        again, other = socket.socketpair()
        try:
            got = asyncio.Event()
            loop.add_reader(again.fileno(), got.set)  # the same number, if the kernel reused it: watched again
            other.send(b"x")
            await asyncio.wait_for(got.wait(), timeout=5)
        finally:
            loop.remove_reader(again.fileno())
            again.close()
            other.close()
    finally:
        drop_stale(loop)


async def test_live_registrations_are_left_alone() -> None:
    loop = asyncio.get_running_loop()
    left, right = socket.socketpair()
    try:
        loop.add_reader(left.fileno(), lambda: None)
        assert left.fileno() not in [key.fd for key in stale_registrations(loop)]
        assert drop_stale(loop) == []
    finally:
        loop.remove_reader(left.fileno())
        left.close()
        right.close()
