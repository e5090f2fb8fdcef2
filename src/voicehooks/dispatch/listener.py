"""LISTEN on the dispatchers' wake-up channel, reconnecting after any loss of the connection."""

import asyncio
import contextlib
from collections.abc import Callable

import asyncpg

from voicehooks.db.outage import DRIVER_ERRORS
from voicehooks.queue.wakeup import DELIVERIES_CHANNEL

RECONNECT_DELAY = 1.0


class Listener:
    """Calls `on_notification(payload)` for each notification until `stopping` is set.

    `on_connected` runs after each (re)connection: anything notified while no connection
    listened is unknown, so the caller treats it as a wake-up.
    """

    def __init__(
        self,
        database_url: str,
        *,
        stopping: asyncio.Event,
        on_notification: Callable[[str], None],
        on_connected: Callable[[], None],
        on_fault: Callable[[Exception], None],
    ) -> None:
        self._database_url = database_url
        self._stopping = stopping
        self._on_notification = on_notification
        self._on_connected = on_connected
        self._on_fault = on_fault

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._listen_once()
            except DRIVER_ERRORS as exc:
                self._on_fault(exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), RECONNECT_DELAY)

    async def _listen_once(self) -> None:
        """One connection: listen until it is lost or the dispatcher stops."""
        lost = asyncio.Event()
        connection = await asyncpg.connect(self._database_url)
        try:
            connection.add_termination_listener(lambda _: lost.set())
            await connection.add_listener(
                DELIVERIES_CHANNEL, lambda *args: self._on_notification(args[-1])
            )
            self._on_connected()
            waiters = [
                asyncio.ensure_future(lost.wait()),
                asyncio.ensure_future(self._stopping.wait()),
            ]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                # The other waiter would outlive this connection: one per reconnect.
                for waiter in waiters:
                    waiter.cancel()
        finally:
            with contextlib.suppress(Exception):
                await connection.close()
