"""Per-host fair sharing of the in-flight slots of one worker.

Claimed deliveries wait here per destination host. Sender loops each send one host's
deliveries one at a time: at most `per_host` loops per host and `max_in_flight` in all. A
host that wants another loop while all are busy queues up (oldest first); a loop that
finishes a delivery while another host waits gives its slot to that host.
"""

import asyncio
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable

from voicehooks.queue.claim import ClaimedDelivery


class HostSlots:
    def __init__(
        self,
        *,
        max_in_flight: int,
        per_host: int,
        send: Callable[[ClaimedDelivery], Awaitable[None]],
        on_finished: Callable[[], None],
        stopping: asyncio.Event,
    ) -> None:
        self._max_in_flight = max_in_flight
        self._per_host = per_host
        self._send = send
        self._on_finished = on_finished
        self._stopping = stopping
        # Claimed and not finished, per destination host (waiting or being sent).
        self.held: Counter[str] = Counter()
        # Claimed and waiting for a sender, per destination host.
        self._waiting: dict[str, deque[ClaimedDelivery]] = {}
        self.senders: set[asyncio.Task[None]] = set()
        self._senders_per_host: Counter[str] = Counter()
        # Hosts that wanted another sender while all max_in_flight were busy, oldest first.
        self._starving: dict[str, None] = {}

    def start(self, delivery: ClaimedDelivery) -> None:
        host = delivery.target_host
        self.held[host] += 1
        self._waiting.setdefault(host, deque()).append(delivery)
        self._add_senders(host)

    def unsent(self) -> list[ClaimedDelivery]:
        """Held and not sent (after a stop): for the claims to be released."""
        return [delivery for queue in self._waiting.values() for delivery in queue]

    def drop_subscription(self, subscription_id: uuid.UUID) -> None:
        """Forget every waiting delivery of the subscription; requests on the wire finish."""
        for host, queue in list(self._waiting.items()):
            kept = [d for d in queue if d.subscription_id != subscription_id]
            dropped = len(queue) - len(kept)
            if not dropped:
                continue
            queue.clear()
            queue.extend(kept)
            for _ in range(dropped):
                self._finished(host)
            if not queue and not self._senders_per_host[host]:
                del self._waiting[host]
                self._starving.pop(host, None)

    def _add_senders(self, host: str) -> None:
        """As many sender loops for the host as it has deliveries held, within both bounds."""
        if self._stopping.is_set():
            return  # what waits now is handed back by the dispatcher
        limit = min(self._per_host, self.held[host])
        while self._senders_per_host[host] < limit:
            if len(self.senders) >= self._max_in_flight:
                self._starving[host] = None
                return
            self._senders_per_host[host] += 1
            task = asyncio.create_task(self._send_loop(host))
            self.senders.add(task)
            # The loop leaves the set itself; this covers one cancelled before it started.
            task.add_done_callback(self.senders.discard)

    async def _send_loop(self, host: str) -> None:
        queue = self._waiting[host]
        try:
            while queue and not self._stopping.is_set():
                delivery = queue.popleft()
                await self._send(delivery)
                self._finished(host)
                if self._another_host_starves(host):
                    break  # give the slot to it
        finally:
            self.senders.discard(asyncio.current_task())
            self._senders_per_host[host] -= 1
            if queue and not self._stopping.is_set():
                self._starving[host] = None  # gave its slot away: queue up for the next one
            if not self._senders_per_host[host]:
                del self._senders_per_host[host]
                if not queue:
                    del self._waiting[host]
            self._feed_starving()

    def _another_host_starves(self, host: str) -> bool:
        if len(self.senders) < self._max_in_flight or not self._starving:
            return False
        return len(self._starving) > 1 or host not in self._starving

    def _feed_starving(self) -> None:
        """A sender slot came free: the host that has waited longest for one gets it."""
        while self._starving and len(self.senders) < self._max_in_flight:
            host = next(iter(self._starving))
            del self._starving[host]
            if host in self._waiting:
                self._add_senders(host)
            if host in self._starving:
                return

    def _finished(self, host: str) -> None:
        """A held delivery is done: its room can be claimed again."""
        self.held[host] -= 1
        if self.held[host] <= 0:
            del self.held[host]
        self._on_finished()
