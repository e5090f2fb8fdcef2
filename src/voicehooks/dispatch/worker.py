"""The dispatcher: claim due deliveries, send them, record the outcomes, keep the queue healthy.

Wake-ups come from LISTEN/NOTIFY (ingestion and replays notify on commit) with a polling
backstop. A claim is committed before any request is sent; no transaction or connection is held
while a request is in flight. Outcomes are recorded in batches.
"""

import asyncio
import contextlib
import functools
import logging
import math
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
import structlog

from voicehooks.config import Settings
from voicehooks.db import partitions
from voicehooks.db.engine import SESSION_SETTINGS, look_up_types
from voicehooks.db.outage import DRIVER_ERRORS, is_outage, outages
from voicehooks.db.urls import libpq_url
from voicehooks.dispatch.keys import UNDECRYPTABLE_ERROR, SigningKeys
from voicehooks.dispatch.listener import Listener
from voicehooks.dispatch.recorder import Recorder
from voicehooks.dispatch.schedule import decide
from voicehooks.dispatch.sender import Outcome, Sender
from voicehooks.dispatch.slots import HostSlots
from voicehooks.observability.metrics import (
    ATTEMPTS,
    DELIVERIES_FINISHED,
    FLUSH_STATEMENT,
    SUBSCRIPTIONS_AUTO_DISABLED,
    counters,
)
from voicehooks.queue import claim, results, upkeep
from voicehooks.queue.claim import ClaimedDelivery
from voicehooks.queue.results import AttemptRecord
from voicehooks.queue.wakeup import cancelled_subscription
from voicehooks.states import Verdict

log = structlog.get_logger("voicehooks.dispatch")

# Claims are batches of up to CLAIM_BATCH, and a worker holds up to HOLD_FACTOR times what it may
# send at once; the rest waits in memory for a free slot, so that sending does not pause for a
# claim. A claim takes four round trips (tens of ms on a busy 2-core machine), in which 32 senders
# to a fast receiver (9 ms a request) send about a hundred: with 100 and 4, the held deliveries
# ran out before one claim in six came back, and the senders idled two thirds of the time (e2e
# 2,070-2,090/s against 2,500-2,530/s with 250 and 8; bench/delivery.py --phases e2e).
# Every slot frees within one timeout, so a held delivery starts within HOLD_FACTOR - 1 timeouts
# and ends within one more: the lease (see `lease_seconds`) covers that plus the margin.
CLAIM_BATCH = 250
HOLD_FACTOR = 8
# While claims are limited by room, the wait after a wake-up for more room to free up.
CLAIM_PAUSE = 0.005
RECONNECT_DELAY = 1.0
# Claim loop, recorder, housekeeping and the metrics flush each hold one at a time.
POOL_SIZE = 4
HOT_STATEMENTS = (*claim.HOT_STATEMENTS, *results.HOT_STATEMENTS, FLUSH_STATEMENT)


async def _keep_session(_: asyncpg.Connection) -> None:
    """Skip asyncpg's reset round trip on release: these connections keep no session state."""


class Dispatcher:
    def __init__(self, settings: Settings, database_url: str) -> None:
        self.settings = settings
        self.database_url = libpq_url(database_url)
        self.sender = Sender(settings)
        self._keys = SigningKeys(settings.key_ring())
        self._pool: asyncpg.Pool | None = None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._short_of_room = False
        self._slots = HostSlots(
            max_in_flight=settings.max_in_flight,
            per_host=settings.max_in_flight_per_host,
            send=self._attempt,
            on_finished=self._room_freed,
            stopping=self._stopping,
        )
        self._recorder = Recorder(
            self._connection,
            auto_disable_after=settings.auto_disable_after,
            stopping=self._stopping,
            on_recorded=self._recorded,
            on_fault=functools.partial(self._database_fault, "record"),
        )
        self._listener = Listener(
            self.database_url,
            stopping=self._stopping,
            on_notification=self._on_notification,
            on_connected=self._wake.set,
            on_fault=functools.partial(self._database_fault, "listen"),
        )
        # Subscriptions deleted or deactivated, and when this worker heard of it (monotonic).
        self._cancelled: dict[uuid.UUID, float] = {}

    @property
    def lease_seconds(self) -> float:
        """How long a claimed delivery stays with this worker before others may take it."""
        return HOLD_FACTOR * self.settings.delivery_timeout + self.settings.lease_margin

    # -- life cycle -------------------------------------------------------------------------

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Dispatch until stop(); then finish what is in flight and record it."""
        self._pool = await asyncpg.create_pool(
            self.database_url,
            # All opened at start and kept: a connection opened under load costs both CPUs
            # of a small machine tens of milliseconds, when they are needed most. So none is
            # closed for idling, nor replaced after a number of queries (asyncpg's default
            # replaces one every 50,000: every few seconds at full speed).
            min_size=POOL_SIZE,
            max_size=POOL_SIZE,
            max_inactive_connection_lifetime=0,
            max_queries=math.inf,
            init=functools.partial(look_up_types, statements=HOT_STATEMENTS),
            reset=_keep_session,
            server_settings=dict(SESSION_SETTINGS),
        )
        await self.sender.start()
        background = [
            asyncio.create_task(self._supervised("listen", self._listener.run)),
            asyncio.create_task(self._supervised("housekeeping", self._housekeeping)),
            asyncio.create_task(
                self._supervised(
                    "metrics", functools.partial(counters.flush_forever, self._connection)
                )
            ),
        ]
        recorder = asyncio.create_task(self._supervised("record", self._recorder.run))
        log.info("dispatcher_started", max_in_flight=self.settings.max_in_flight)
        try:
            await self._claim_loop()
        finally:
            senders = set(self._slots.senders)
            if senders:
                await asyncio.wait(senders, timeout=self.settings.delivery_timeout + 5)
            for task in self._slots.senders:
                task.cancel()
            # Let the recorder finish the batch it holds (cancelling it would lose that batch).
            self.stop()
            self._recorder.wake()
            await recorder
            await self._recorder.flush(give_up=self._pool_is_gone)
            await self._hand_back_unsent()
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            with contextlib.suppress(Exception):
                async with self._connection() as connection:
                    await counters.flush(connection)
            await self.sender.close()
            await self._pool.close()
            log.info("dispatcher_stopped")

    async def _supervised(self, duty: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run a duty until the dispatcher stops; a bug in it is logged and the duty restarted,
        so that no duty dies silently while the claim loop goes on without it."""
        while not self._stopping.is_set():
            try:
                await run()
            except Exception:
                log.exception(f"{duty}_crashed")
                await self._sleep(RECONNECT_DELAY)
            else:
                return

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; one that asyncpg finds left mid-operation is never reused."""
        assert self._pool is not None
        async with self._pool.acquire() as connection:
            try:
                yield connection
            except asyncpg.InternalClientError:
                # Seen after a database restart: the connection says another operation is
                # in progress, and would say so to every later statement. The pool opens a
                # new one in its place.
                connection.terminate()
                raise

    # -- claiming ---------------------------------------------------------------------------

    @property
    def _hold_per_host(self) -> int:
        return HOLD_FACTOR * self.settings.max_in_flight_per_host

    def _host_room(self) -> dict[str, int]:
        return {host: self._hold_per_host - held for host, held in self._slots.held.items()}

    async def _claim_loop(self) -> None:
        assert self._pool is not None
        while not self._stopping.is_set():
            self._wake.clear()
            room = HOLD_FACTOR * self.settings.max_in_flight - self._slots.held.total()
            requested = min(room, CLAIM_BATCH)
            claimed: list[ClaimedDelivery] = []
            host_free = self._host_room()
            claim_started = time.monotonic()
            if requested > 0:
                try:
                    async with self._connection() as connection:
                        claimed = await claim.claim(
                            connection,
                            limit=requested,
                            host_free=host_free,
                            per_host=self._hold_per_host,
                            lease_seconds=self.lease_seconds,
                        )
                except DRIVER_ERRORS as exc:
                    self._database_fault("claim", exc)
                    await self._sleep(RECONNECT_DELAY)
                    continue
                except Exception:
                    # A bug must not stop dispatching: what it leased comes back after the
                    # lease, and the next claim tries again.
                    log.exception("claim_crashed")
                    await self._sleep(RECONNECT_DELAY)
                    continue
                outages.succeeded(claim_started)
            for delivery in claimed:
                if self._cancelled.get(delivery.subscription_id, -math.inf) < claim_started:
                    self._slots.start(delivery)
                # else: cancelled while this claim ran (it may have read the row before the
                # change committed); its row is gone or failed, so there is nothing to hand back.
            # Room that frees up is worth a claim only if this one was short of room.
            self._short_of_room = self._claim_was_short_of_room(requested, claimed, host_free)
            if requested and len(claimed) == requested:
                continue  # more may be due right now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.poll_interval)
            if self._short_of_room:
                # Let completions gather so that the next claim is a batch, not one row.
                await self._sleep(CLAIM_PAUSE)

    def _claim_was_short_of_room(
        self, requested: int, claimed: list[ClaimedDelivery], host_free: dict[str, int]
    ) -> bool:
        """It got all it asked for, or a host was full or filled up: more may be due."""
        if len(claimed) == requested or any(free <= 0 for free in host_free.values()):
            return True
        got = Counter(delivery.target_host for delivery in claimed)
        return any(count >= host_free.get(host, self._hold_per_host) for host, count in got.items())

    def _database_fault(self, duty: str, error: Exception) -> None:
        """An outage is logged once for all duties; any other error is a fault worth a line."""
        if is_outage(error):
            outages.failed(error)
        else:
            log.warning(f"{duty}_failed", error=str(error))

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    # -- cancelling -----------------------------------------------------------------------

    def _on_notification(self, payload: str) -> None:
        subscription_id = cancelled_subscription(payload)
        if subscription_id is not None:
            self._cancel(subscription_id)
        self._wake.set()

    def _cancel(self, subscription_id: uuid.UUID) -> None:
        """Drop every held delivery of the subscription; claims still running drop theirs.

        Requests already on the wire finish; nothing new is sent for it from here on.
        """
        now = time.monotonic()
        self._cancelled[subscription_id] = now
        # A claim that started before this is over within a lease; older entries are moot.
        horizon = now - 2 * self.lease_seconds
        for old in [sid for sid, at in self._cancelled.items() if at < horizon]:
            del self._cancelled[old]
        self._slots.drop_subscription(subscription_id)

    # -- sending --------------------------------------------------------------------------

    def _room_freed(self) -> None:
        """A held delivery is done: worth a claim if the last one was short of room."""
        if self._short_of_room:
            self._wake.set()

    async def _attempt(self, delivery: ClaimedDelivery) -> None:
        """Send one delivery and collect its outcome for the recorder."""
        started_at = datetime.now(UTC)
        keys = self._keys.of(delivery)
        try:
            if keys is None:  # a failed attempt, retried on schedule: a restart with the key heals
                outcome = Outcome(False, 0, error=UNDECRYPTABLE_ERROR)
            else:
                outcome = await self.sender.send(
                    delivery_id=str(delivery.id),
                    url=delivery.url,
                    body=delivery.body,
                    signing_key=keys[0],
                    previous_keys=keys[1],
                )
        except Exception as exc:  # a bug must not strand the delivery: record it as failed
            log.exception("send_crashed", delivery_id=str(delivery.id))
            outcome = Outcome(False, 0, error=f"internal error: {type(exc).__name__}")
        record = self._decide(delivery, outcome, started_at)
        # Every attempt is in the attempt log; INFO has one line per recorded batch.
        if log.is_enabled_for(logging.DEBUG):
            log.debug(
                "attempt",
                workspace_id=str(delivery.workspace_id),
                subscription_id=str(delivery.subscription_id),
                delivery_id=str(delivery.id),
                event_id=str(delivery.event_id),
                attempt=delivery.attempts_made + 1,
                outcome=record.outcome,
                status_code=outcome.status_code,
                error=outcome.error,
                duration_ms=outcome.duration_ms,
            )
        self._recorder.add(record)

    def _decide(
        self, delivery: ClaimedDelivery, outcome: Outcome, started_at: datetime
    ) -> AttemptRecord:
        decision = decide(
            succeeded=outcome.succeeded,
            status_code=outcome.status_code,
            retry_after=outcome.retry_after,
            attempts_made=delivery.attempts_made + 1,
            attempts_allowed=delivery.attempts_allowed or self.settings.max_attempts,
            delays=self.settings.retry_delays,
        )
        return AttemptRecord(
            delivery=delivery,
            outcome=decision.verdict,
            retry_in=decision.retry_in,
            started_at=started_at,
            duration_ms=outcome.duration_ms,
            status_code=outcome.status_code,
            error=outcome.error,
            response_body=outcome.response_body,
            endpoint_gone=decision.endpoint_gone,
            request_headers=outcome.request_headers,
        )

    # -- recording --------------------------------------------------------------------------

    def _recorded(
        self, batch: list[AttemptRecord], disabled: list[tuple[uuid.UUID, str]], queued: int
    ) -> None:
        self._count(batch, disabled)
        if queued:
            self._wake.set()

    def _pool_is_gone(self) -> bool:
        """Stopping with no connection left: what is unrecorded is sent again after its lease."""
        return self._stopping.is_set() and self._pool is not None and not self._pool.get_size()

    async def _hand_back_unsent(self) -> None:
        """Release the claims of deliveries that were held but not sent, for others to take now."""
        assert self._pool is not None
        unsent = self._slots.unsent()
        if not unsent:
            return
        try:
            async with self._connection() as connection:
                await claim.release_claims(connection, unsent)
        except DRIVER_ERRORS as exc:
            self._database_fault("release", exc)

    @staticmethod
    def _count(batch: list[AttemptRecord], disabled: list[tuple[uuid.UUID, str]]) -> None:
        # Counted per (outcome, status) first, then one increment each, not one per attempt:
        # the same sums for a fraction of the work.
        kinds: Counter[tuple[str, str]] = Counter()
        for record in batch:
            kinds[(record.outcome, record.execution_status)] += 1
            counters.observe_duration(record.duration_ms / 1000)
        outcomes: Counter[str] = Counter()
        for (outcome, execution_status), count in kinds.items():
            outcomes[outcome] += count
            counters.increment(ATTEMPTS, count, outcome=execution_status)
            if outcome != Verdict.RETRY:
                counters.increment(DELIVERIES_FINISHED, count, state=outcome)
        log.info(
            "attempts_recorded",
            attempts=len(batch),
            succeeded=outcomes[Verdict.SUCCEEDED],
            retrying=outcomes[Verdict.RETRY],
            failed=outcomes[Verdict.FAILED],
        )
        for subscription_id, reason in disabled:
            counters.increment(SUBSCRIPTIONS_AUTO_DISABLED, reason=reason)
            log.warning(
                "subscription_disabled", subscription_id=str(subscription_id), reason=reason
            )

    # -- background duties ------------------------------------------------------------------

    async def _keep_history(self, connection: asyncpg.Connection) -> None:
        """Days of history: the coming ones created, the expired ones dropped."""
        now = datetime.now(UTC)
        created = await partitions.ensure_partitions(
            connection, partitions.days_to_keep(now, self.settings.retention_days)
        )
        if created:
            log.info("history_partitions_created", partitions=created)
        expired = await upkeep.expire_history(connection, now, self.settings.retention_days)
        if expired is None:
            return
        if expired.dropped or expired.keys_trimmed:
            log.info(
                "retention_dropped",
                days=[day.isoformat() for day in expired.dropped],
                event_keys=expired.keys_trimmed,
            )
        if expired.kept:
            log.info(
                "retention_kept_days_with_pending_deliveries",
                days=[day.isoformat() for day in expired.kept],
            )

    async def _housekeeping(self) -> None:
        assert self._pool is not None
        last_purge = 0.0
        while not self._stopping.is_set():
            try:
                async with self._connection() as connection:
                    if await upkeep.queue_stranded(connection):
                        self._wake.set()
                    if time.monotonic() - last_purge >= self.settings.housekeeping_interval:
                        last_purge = time.monotonic()
                        await self._keep_history(connection)
            except DRIVER_ERRORS as exc:
                self._database_fault("housekeeping", exc)
            await self._sleep(min(self.settings.poll_interval, self.settings.housekeeping_interval))
