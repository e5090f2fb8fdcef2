"""Concurrent ingest requests share transactions: a buffer flushed by size or after a linger.

One commit per request made the commit (and the session work around it) the cost of every
event. Here each request, validated on its own, hands its events to the writer and waits on a
future; the writer stores the events of every request that arrived meanwhile with the
set-based statements of `service.store`, and resolves each future after the commit. The
events and their deliveries are written by one statement, so that statement is the
transaction: no BEGIN, COMMIT or NOTIFY round trips of their own (two statements per
shared commit instead of five). So a 202 still means "committed, with its deliveries", and a
request's items stay together (a batch request is all-or-nothing, as before).
"""

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from voicehooks.db.engine import pooled_driver
from voicehooks.db.outage import is_outage, outages
from voicehooks.ingestion.repository import IngestionRepository
from voicehooks.ingestion.schemas import EventIn
from voicehooks.ingestion.service import Accepted, CallFacts, store

# A flush waits this long for more requests when a transaction is running and the other
# slot is free: under load the buffer fills while earlier transactions run. A request that
# finds no transaction running goes at once: nothing is on its way to keep it company, and
# at a quiet moment the wait would only add to its latency (about 1 ms of the 6-8 ms of a
# 202 at 100 events/s, measured).
LINGER_SECONDS = 0.001
# Events of one shared transaction; a request is never split, so one may go beyond.
MAX_EVENTS = 1000
# A request this large goes without the linger when a transaction slot is free: it pays for
# its commit alone, and waiting for company would only add to its latency (a millisecond of
# the ~30 of a 500-event batch).
PROMPT_EVENTS = 100
# Transactions in flight at once: enough to keep the database busy while Python prepares
# the next one, few enough to leave the pool to the other endpoints.
MAX_WRITES = 2


@dataclass
class _Request:
    events: Sequence[EventIn]
    facts: Sequence[CallFacts]
    answer: asyncio.Future[list[Accepted]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class IngestWriter:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._buffer: list[_Request] = []
        self._buffered_events = 0
        self._timer: asyncio.TimerHandle | None = None
        self._writes: set[asyncio.Task[None]] = set()

    async def write(self, events: Sequence[EventIn], facts: Sequence[CallFacts]) -> list[Accepted]:
        """Store the (validated) events of one request; their results, in order, once
        committed. Raises what the database raised: an outage fails every request of the
        transaction alike."""
        request = _Request(events, facts)
        self._buffer.append(request)
        self._buffered_events += len(events)
        if not self._writes or self._buffered_events >= MAX_EVENTS or len(events) >= PROMPT_EVENTS:
            self._flush()
        elif self._timer is None and len(self._writes) < MAX_WRITES:
            self._timer = asyncio.get_running_loop().call_later(LINGER_SECONDS, self._flush)
        # Shielded: a client that goes away does not take its events out of the transaction.
        return await asyncio.shield(request.answer)

    async def drain(self) -> None:
        """Wait for every buffered and running write (at shutdown, before the pool closes)."""
        self._flush()
        while self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._buffer or len(self._writes) >= MAX_WRITES:
            return  # a running write flushes when it ends
        requests, self._buffer, self._buffered_events = self._buffer, [], 0
        task = asyncio.create_task(self._write(requests))
        self._writes.add(task)
        task.add_done_callback(self._written)

    def _written(self, task: asyncio.Task[None]) -> None:
        self._writes.discard(task)
        # What arrived during the write goes now: it has waited at least that long already.
        self._flush()

    async def _write(self, requests: list[_Request]) -> None:
        try:
            await self._commit_together(requests)
            return
        except Exception as error:
            if is_outage(error) or len(requests) == 1:
                _fail(requests, error)
                return
        except BaseException as error:  # cancelled: its waiters are told so, then it ends
            _fail(requests, error)
            raise
        # Something about one request (never expected: validation came first) must not fail
        # the others: each alone, in a transaction of its own.
        for index, request in enumerate(requests):
            try:
                await self._commit_together([request])
            except Exception as error:
                _fail(requests[index:] if is_outage(error) else [request], error)
                if is_outage(error):
                    return
            except BaseException as error:
                _fail(requests[index:], error)
                raise

    async def _commit_together(self, requests: list[_Request]) -> None:
        events = [event for request in requests for event in request.events]
        facts = [fact for request in requests for fact in request.facts]
        began = time.monotonic()
        async with pooled_driver(self._engine) as connection:
            results = await store(IngestionRepository(connection), events, facts)
        outages.succeeded(began)
        start = 0
        for request in requests:
            end = start + len(request.events)
            if not request.answer.done():
                request.answer.set_result(results[start:end])
            start = end


def _fail(requests: Sequence[_Request], error: BaseException) -> None:
    """Every waiter raises `error`: an outage is a 503 (problem+json, Retry-After) for each."""
    if is_outage(error):
        outages.failed(error)
    for request in requests:
        if not request.answer.done():
            request.answer.set_exception(error)
