"""Real `python -m voicehooks worker` processes against one database (SPEC §4 guarantees):
several workers never send one delivery twice, a killed worker's deliveries are sent after
their lease, and SIGTERM finishes what is in flight and leaves nothing claimed."""

import asyncio
import json
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.delivery_helpers import count, ingest_batch, running_dispatcher
from tests.operations_helpers import spawn_voicehooks
from tests.support import TEST_ENCRYPTION_KEY, Reply, call_event, create_subscription, wait_until
from voicehooks.dispatch.worker import HOLD_FACTOR


class Worker:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> "Worker":
        with self.log_path.open("wb") as log:
            self.process = await spawn_voicehooks(self.env, "worker", stdout=log, stderr=log)
        await wait_until(lambda: "dispatcher_started" in self.log(), timeout=20, interval=0.05)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_events(self, name: str) -> list[dict]:
        found = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                if entry.get("event") == name:
                    found.append(entry)
        return found

    async def exit_code(self, timeout: float) -> int:
        assert self.process is not None
        return await asyncio.wait_for(self.process.wait(), timeout)

    async def stop_now(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


@pytest.fixture
async def workers(database_url, tmp_path):
    """Start worker processes with `await workers(**extra_env)`; all are killed afterwards."""
    started: list[Worker] = []

    async def start(**extra: str) -> Worker:
        env = {key: value for key, value in os.environ.items() if not key.startswith("VOICEHOOKS_")}
        env.update(
            VOICEHOOKS_DATABASE_URL=database_url,
            VOICEHOOKS_ALLOW_HTTP_TARGETS="true",
            VOICEHOOKS_ALLOWED_TARGET_NETWORKS="127.0.0.0/8",
            VOICEHOOKS_DELIVERY_TIMEOUT="2",
            VOICEHOOKS_LEASE_MARGIN="1",
            VOICEHOOKS_POLL_INTERVAL="0.1",
            VOICEHOOKS_RETRY_DELAYS="0.2,0.2,0.2",
            VOICEHOOKS_ENCRYPTION_KEYS=TEST_ENCRYPTION_KEY,
        )
        env.update({f"VOICEHOOKS_{key.upper()}": value for key, value in extra.items()})
        worker = Worker(env, tmp_path / f"worker-{len(started)}.log")
        started.append(worker)
        return await worker.start()

    yield start
    for worker in started:
        await worker.stop_now()


def recorded_attempts(worker: "Worker") -> int:
    """Attempts the worker's processes recorded, from their one line per recorded batch."""
    return sum(entry["attempts"] for entry in worker.log_events("attempts_recorded"))


async def all_succeeded(db, total: int) -> bool:
    return await count(db, "SELECT count(*) FROM deliveries WHERE state = 'succeeded'") == total


async def test_two_workers_deliver_each_delivery_exactly_once(
    client, tenant, receiver, db, workers
):
    first = await workers(max_in_flight="16")
    second = await workers(max_in_flight="16")
    receiver.reply(Reply(200, delay=0.02))
    for path in ("/a", "/b", "/c"):
        await create_subscription(client, tenant, url=f"{receiver.url}{path}")
    events = [call_event(tenant.workspace_id, call_id=f"call-{n}") for n in range(100)]
    results = await ingest_batch(client, events)
    assert sum(r["deliveries"] for r in results) == 300

    await wait_until(lambda: all_succeeded(db, 300), timeout=30, interval=0.1)
    delivery_ids = {str(row["id"]) for row in await db.fetch("SELECT id FROM deliveries")}
    received = Counter(r.headers["webhook-id"] for r in receiver.requests)
    assert set(received) == delivery_ids
    assert set(received.values()) == {1}, received.most_common(3)
    assert await count(db, "SELECT count(*) FROM attempts") == 300
    assert await count(db, "SELECT count(*) FROM deliveries WHERE attempts <> 1") == 0

    # Both processes took part (each logs the attempts it records).
    def attempts() -> list[int]:
        return [recorded_attempts(worker) for worker in (first, second)]

    await wait_until(lambda: sum(attempts()) == 300, timeout=10)
    assert min(attempts()) > 0, attempts()


async def test_killed_worker_deliveries_are_sent_after_their_lease(
    client, tenant, receiver, db, workers
):
    lease = HOLD_FACTOR * 2 + 1  # held share x VOICEHOOKS_DELIVERY_TIMEOUT + LEASE_MARGIN
    doomed = await workers(max_in_flight="10")
    receiver.reply(Reply(200, delay=1.0))  # slow: deliveries are in flight when it dies
    await create_subscription(client, tenant, url=f"{receiver.url}/hook")
    await ingest_batch(
        client, [call_event(tenant.workspace_id, call_id=f"call-{n}") for n in range(30)]
    )
    await wait_until(lambda: len(receiver.requests) >= 10)
    assert doomed.process is not None
    os.kill(doomed.process.pid, signal.SIGKILL)
    assert await doomed.exit_code(timeout=10) == -signal.SIGKILL
    in_flight = {r.headers["webhook-id"]: r.at for r in receiver.requests}
    assert await count(db, "SELECT count(*) FROM attempts") == 0  # none was recorded

    receiver.reply(Reply(200))
    await workers()
    await wait_until(lambda: all_succeeded(db, 30), timeout=lease + 15, interval=0.1)

    delivery_ids = {str(row["id"]) for row in await db.fetch("SELECT id FROM deliveries")}
    received: dict[str, list[float]] = {}
    for request in receiver.requests:
        received.setdefault(request.headers["webhook-id"], []).append(request.at)
    assert set(received) == delivery_ids  # every event arrived
    for delivery_id, first_sent in in_flight.items():
        again = [at for at in received[delivery_id] if at > first_sent]
        assert again, delivery_id  # at least once: sent again by the new worker ...
        assert again[0] - first_sent >= lease - 0.5  # ... once the dead worker's lease ended
    assert await count(db, "SELECT count(*) FROM delivery_queue") == 0


async def test_sigterm_finishes_in_flight_requests_and_leaves_nothing_claimed(
    client, tenant, receiver, db, workers, database_url
):
    worker = await workers(max_in_flight="5", delivery_timeout="5")
    receiver.reply(Reply(200, delay=1.0))
    await create_subscription(client, tenant, url=f"{receiver.url}/hook")
    await ingest_batch(
        client, [call_event(tenant.workspace_id, call_id=f"call-{n}") for n in range(20)]
    )
    await wait_until(lambda: len(receiver.requests) == 5)  # its whole in-flight allowance
    assert worker.process is not None
    worker.process.send_signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    assert await worker.exit_code(timeout=15) == 0
    assert "dispatcher_stopped" in worker.log()

    sent = {r.headers["webhook-id"] for r in receiver.requests}
    assert len(sent) == 5
    # The requests under way were answered and recorded as successes, not cut off.
    rows = await db.fetch(
        "SELECT id::text, state, attempts FROM deliveries WHERE id = ANY($1::uuid[])", list(sent)
    )
    assert {(row["state"], row["attempts"]) for row in rows} == {("succeeded", 1)}
    logged = await db.fetch("SELECT execution_status, response_status_code FROM attempts")
    assert [tuple(row) for row in logged] == [("succeeded", 200)] * 5
    # Nothing is left claimed: the rest can go out at once, without waiting for a lease.
    claimed = "SELECT count(*) FROM delivery_queue WHERE claim_token IS NOT NULL"
    assert await count(db, claimed) == 0
    assert await count(db, "SELECT count(*) FROM deliveries WHERE state = 'pending'") == 15
    assert time.monotonic() - stopped_at < 5  # it did not sit out a timeout

    receiver.reply(Reply(200))
    async with running_dispatcher(database_url):
        await wait_until(lambda: all_succeeded(db, 20), timeout=10)
    received = Counter(r.headers["webhook-id"] for r in receiver.requests)
    assert len(received) == 20 and set(received.values()) == {1}


async def test_one_worker_command_runs_several_dispatcher_processes(
    client, tenant, receiver, db, workers
):
    worker = await workers(worker_processes="2", max_in_flight="8")
    await wait_until(lambda: worker.log().count("dispatcher_started") == 2, timeout=20)
    receiver.reply(Reply(200, delay=0.01))
    await create_subscription(client, tenant, url=f"{receiver.url}/hook")
    await ingest_batch(
        client, [call_event(tenant.workspace_id, call_id=f"call-{n}") for n in range(200)]
    )
    await wait_until(lambda: all_succeeded(db, 200), timeout=30, interval=0.1)
    received = Counter(r.headers["webhook-id"] for r in receiver.requests)
    assert len(received) == 200 and set(received.values()) == {1}
    await wait_until(lambda: recorded_attempts(worker) == 200, timeout=10)

    assert worker.process is not None
    worker.process.send_signal(signal.SIGTERM)
    assert await worker.exit_code(timeout=20) == 0
    # The second process stopped with the first: both said so before the command returned.
    assert worker.log().count("dispatcher_stopped") == 2
