"""The claim's cost does not hinge on planner statistics, a dead host's backlog, or history.

Each case fills the queue, takes statistics the way autovacuum would (while nothing was
pending, or after the fill), and runs the claim under EXPLAIN (ANALYZE, BUFFERS) in a
transaction that is rolled back. What is asserted is what the database reads: the pages a
claim of 100 touches, and that no table is scanned whole. Reading the whole queue (or a dead
host's rows) would touch tens of thousands of pages.
"""

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from voicehooks.config import Settings
from voicehooks.db import partitions
from voicehooks.db.engine import SESSION_SETTINGS
from voicehooks.db.urls import libpq_url
from voicehooks.queue.claim import CLAIM_SQL, HISTORY_SQL, ClaimedDelivery, claim
from voicehooks.queue.results import RECORD_SQL

ROWS = 100_000
CLAIM = 100
# A claim of 100 locks, leases and joins 100 rows by primary key (a few pages per row and
# table: about 2,000 pages with a 1,000-row queue, 2,900 with 100,000, the indexes being one
# level deeper), plus a few pages per host. Walking a backlog would read 50,000 and more.
PAGE_BUDGET = 5_000
# The days a worker keeps partitions for (the default retention), as in production.
RETENTION_DAYS = Settings.model_fields["retention_days"].default


@pytest.fixture
async def queue_fill(db: asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    """A transaction with one workspace, two subscriptions and their hosts; rolled back."""
    transaction = db.transaction()
    await transaction.start()
    try:
        yield db
    finally:
        await transaction.rollback()


async def _subscriptions(db: asyncpg.Connection) -> tuple[uuid.UUID, uuid.UUID]:
    organization, workspace = uuid.uuid4(), uuid.uuid4()
    await db.execute(
        "INSERT INTO organizations (id, name) VALUES ($1, $2)", organization, str(organization)
    )
    await db.execute(
        "INSERT INTO workspaces (id, organization_id, name) VALUES ($1, $2, 'plans')",
        workspace,
        organization,
    )
    ids = (uuid.uuid4(), uuid.uuid4())
    for sid, host in zip(ids, ("healthy.example", "dead.example"), strict=True):
        await db.execute(
            """INSERT INTO subscriptions (id, organization_id, workspace_id, service, event, url,
                   target_host, signing_key, event_filters)
               VALUES ($1, $2, $3, 'channels', 'voice.inbound', $4, $5, 'v1.x.y', '[]')""",
            sid,
            organization,
            workspace,
            f"https://{host}/hook",
            host,
        )
    return ids


async def _fill(
    db: asyncpg.Connection, subscription_id: uuid.UUID, host: str, rows: int, *, age: float = 600
) -> None:
    """`rows` deliveries of `host`, one call each, due since `age` seconds ago and later (one
    every 10 µs): events, deliveries and queue rows."""
    await db.execute(
        """
        WITH ids AS (
            SELECT gen_random_uuid() AS event_id, gen_random_uuid() AS delivery_id, n,
                   nextval(pg_get_serial_sequence('deliveries', 'seq')) AS seq
            FROM generate_series(1, $3) AS n
        ), e AS (
            INSERT INTO events (id, workspace_id, event, call_id, body, delivery_count)
            SELECT event_id, s.workspace_id, 'voice.inbound', $2::text || n, '{}', 1
            FROM ids, subscriptions s WHERE s.id = $1::uuid
        ), d AS (
            INSERT INTO deliveries (id, event_id, subscription_id, call_id, seq, next_attempt_at)
            SELECT delivery_id, event_id, $1::uuid, $2::text || n, seq, now() FROM ids
        )
        INSERT INTO delivery_queue (delivery_id, delivery_created_at, subscription_id, call_id,
                                    target_host, seq, due_at)
        SELECT delivery_id, now(), $1::uuid, $2::text || n, $2::text, seq,
               now() - make_interval(secs => $4) + n * interval '10 microseconds'
        FROM ids
        """,
        subscription_id,
        host,
        rows,
        age,
    )


async def _executed_plan(
    db: asyncpg.Connection, statement: str, arguments: str, *, generic: bool = False
) -> dict[str, object]:
    """The plan of `statement`, prepared (its parameters typed as the service's are) and run
    under EXPLAIN ANALYZE with the literal `arguments`; `generic`: the plan the server uses
    for a prepared statement once it finds planning for each call's values not worth it."""
    if generic:
        await db.execute("SET LOCAL plan_cache_mode = force_generic_plan")
    name = f"plan_{uuid.uuid4().hex}"
    await db.execute(f"PREPARE {name} AS {statement}")
    raw = await db.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE {name}({arguments})")
    await db.execute(f"DEALLOCATE {name}")
    await db.execute("SET LOCAL plan_cache_mode = auto")
    plan: dict[str, object] = json.loads(raw)[0]["Plan"]
    return plan


async def _half_and_half(db: asyncpg.Connection, healthy: uuid.UUID, dead: uuid.UUID) -> None:
    """A backlog of ROWS, half of the healthy host, half of the dead one."""
    await _fill(db, healthy, "healthy.example", ROWS // 2)
    await _fill(db, dead, "dead.example", ROWS // 2)


async def _explain(
    db: asyncpg.Connection, *, host_free: dict[str, int], generic: bool = False
) -> tuple[dict[str, object], int]:
    """The executed plan of one claim and the rows it claimed (the claim is rolled back)."""
    await db.execute("SET LOCAL plan_cache_mode = " + ("force_generic_plan" if generic else "auto"))
    claim = db.transaction()  # a savepoint: the claim's updates are rolled back with it
    await claim.start()
    hosts = ",".join(host_free)  # the tests' own host names: no quoting needed
    free = ",".join(str(room) for room in host_free.values())
    plan = await _executed_plan(db, CLAIM_SQL, f"'{{{hosts}}}', '{{{free}}}', 64, {CLAIM}, 30")
    await claim.rollback()
    return plan, int(plan["Actual Rows"])  # type: ignore[call-overload]


def _nodes(plan: dict[str, object]) -> list[dict[str, object]]:
    found = [plan]
    for child in plan.get("Plans", []):  # type: ignore[attr-defined]
        found += _nodes(child)
    return found


def _pages(plan: dict[str, object]) -> int:
    return int(plan["Shared Hit Blocks"]) + int(plan["Shared Read Blocks"])  # type: ignore[call-overload]


def _whole_table_reads(plan: dict[str, object]) -> list[str]:
    return [
        f"{node['Node Type']} on {node.get('Relation Name')}"
        for node in _nodes(plan)
        # A partition pruned at run time shows as a scan that never ran, an empty day's as
        # one that read no page: neither reads anything.
        if node["Node Type"] == "Seq Scan"
        and int(node["Actual Loops"]) > 0  # type: ignore[call-overload]
        and _pages(node) > 0
        and (
            str(node.get("Relation Name")).startswith(("delivery_queue", "deliveries", "events"))
            or int(node["Actual Rows"]) * int(node["Actual Loops"]) > 1_000  # type: ignore[call-overload]
        )
    ]


def _assert_reads_a_few_pages(plan: dict[str, object]) -> None:
    assert _whole_table_reads(plan) == []
    assert _pages(plan) < PAGE_BUDGET, _pages(plan)


ANALYZE_ALL = "ANALYZE delivery_queue, deliveries, events, subscriptions"
IDLE = "taken while idle"
IDLE_AFTER_BUSY = "taken while idle after a busy time"
IDLE_AFTER_BUSY_ONES = "taken while idle after some taken while busy"
AFTER_THE_FILL = "taken after the fill"
STATISTICS = [IDLE, IDLE_AFTER_BUSY, IDLE_AFTER_BUSY_ONES, AFTER_THE_FILL]


async def _idle_after_busy(
    db: asyncpg.Connection, healthy: uuid.UUID, *, analyzed_while_busy: bool = False
) -> None:
    """Statistics of a queue that was busy and is empty now: pages, and no row in them. The
    planner then takes the queue for empty however many rows come in later.

    `analyzed_while_busy`: autovacuum also took statistics while it was busy, with its two
    hosts. An ANALYZE that finds no row keeps the columns' statistics it had: the planner
    then believed one host's rows are half of a table of no rows, physically in host order,
    and costed the claim's ordered walk as reading half the table's pages (a bitmap scan of
    every due row and a sort looked cheaper, and read all 100,000)."""
    await _fill(db, healthy, "healthy.example", 20_000)
    if analyzed_while_busy:
        dead = await db.fetchval("SELECT id FROM subscriptions WHERE target_host = 'dead.example'")
        await _fill(db, dead, "dead.example", 20_000)
        await db.execute(ANALYZE_ALL)
    await db.execute("DELETE FROM delivery_queue")
    await db.execute("UPDATE deliveries SET state = 'succeeded', next_attempt_at = NULL")
    await db.execute(ANALYZE_ALL)


async def _fill_with_statistics(
    db: asyncpg.Connection,
    statistics: str,
    healthy: uuid.UUID,
    fill: Callable[[], Awaitable[None]],
    *,
    analyze: str = ANALYZE_ALL,
) -> None:
    """`fill` the queue, with the planner's statistics (`analyze`) taken as `statistics` says:
    before it on an empty queue, before it on a queue that was busy, or after it."""
    if statistics == IDLE:
        await db.execute(analyze)
    elif statistics in (IDLE_AFTER_BUSY, IDLE_AFTER_BUSY_ONES):
        await _idle_after_busy(db, healthy, analyzed_while_busy=statistics == IDLE_AFTER_BUSY_ONES)
    await fill()
    if statistics == AFTER_THE_FILL:
        await db.execute(analyze)


@pytest.mark.parametrize("statistics", STATISTICS)
@pytest.mark.parametrize("generic", [False, True], ids=["custom plan", "generic plan"])
async def test_a_claim_reads_a_few_pages_of_a_big_backlog_whatever_the_statistics(
    queue_fill: asyncpg.Connection, statistics: str, generic: bool
) -> None:
    db = queue_fill
    healthy, dead = await _subscriptions(db)
    await _fill_with_statistics(db, statistics, healthy, lambda: _half_and_half(db, healthy, dead))

    plan, claimed = await _explain(db, host_free={}, generic=generic)

    assert claimed == CLAIM
    _assert_reads_a_few_pages(plan)


# Row and page counts the planner may hold for the queue (reltuples, relpages), against its
# 100,000 rows: empty at ANALYZE (with no page, one page, or the pages of a busy spell), a
# handful of rows, about right, and far too many.
BELIEVED_SIZES = [
    (0, 0),
    (0, 1),
    (0, 1_000),
    (10, 1_000),
    (100, 10_000),
    (15_000, 1_000),
    (100_000, 1_300),
    (10_000_000, 100_000),
]


async def test_a_claim_reads_a_few_pages_whatever_size_the_planner_believes_the_queue_is(
    queue_fill: asyncpg.Connection,
) -> None:
    """The queue keeps no column statistics, so the planner has its row and page counts
    alone to go by; whatever they are (set here in the catalog, inside the test's
    transaction), the claim is an ordered walk of each host that stops early."""
    db = queue_fill
    healthy, dead = await _subscriptions(db)
    await _half_and_half(db, healthy, dead)
    costly = {}
    for tuples, pages in BELIEVED_SIZES:
        believed = db.transaction()
        await believed.start()
        await db.execute(
            """UPDATE pg_class SET reltuples = $1, relpages = $2, relallvisible = 0
               WHERE oid = 'delivery_queue'::regclass
                  OR oid IN (SELECT indexrelid FROM pg_index
                             WHERE indrelid = 'delivery_queue'::regclass)""",
            tuples,
            pages,
        )
        for generic in (False, True):
            plan, claimed = await _explain(db, host_free={}, generic=generic)
            if claimed != CLAIM or _whole_table_reads(plan) or _pages(plan) >= PAGE_BUDGET:
                costly[(tuples, pages, generic)] = (claimed, _pages(plan))
        await believed.rollback()
    assert costly == {}


@pytest.mark.parametrize("busy_rows", [20_000, 10])
async def test_a_claim_planned_while_the_queue_is_idle_and_vacuumed_stays_a_short_walk(
    db: asyncpg.Connection, database_url: str, busy_rows: int
) -> None:
    """An idle worker claims from an empty queue, which VACUUM has just cut back to no page
    at all after a busy spell (of 20,000 rows, or of 10). Postgres keeps the plan a prepared
    statement settles on after five runs: made for a table of no page, where reading it whole
    costs nothing, it read the whole 100k backlog that came next for every claimed row. The
    service's connections plan each run for the queue as it is then."""
    healthy, dead = await _subscriptions(db)
    await _fill(db, healthy, "healthy.example", busy_rows)
    await db.execute("DELETE FROM delivery_queue")
    await db.execute("VACUUM ANALYZE delivery_queue")
    assert await db.fetchval("SELECT pg_relation_size('delivery_queue')") == 0
    worker = await asyncpg.connect(libpq_url(database_url), server_settings=dict(SESSION_SETTINGS))
    try:
        statement = await worker.prepare(CLAIM_SQL)
        for _ in range(8):  # the idle worker's claims: more than the five Postgres looks at
            async with worker.transaction():
                assert await statement.fetch([], [], 64, CLAIM, 30) == []
        await _half_and_half(db, healthy, dead)

        rolled_back = worker.transaction()
        await rolled_back.start()
        raw = await worker.fetchval(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "
            f"EXECUTE {statement.get_name()}('{{}}', '{{}}', 64, {CLAIM}, 30)"
        )
        await rolled_back.rollback()
    finally:
        await worker.close()
    plan = json.loads(raw)[0]["Plan"]
    assert plan["Actual Rows"] == CLAIM
    _assert_reads_a_few_pages(plan)


async def test_the_queue_keeps_no_column_statistics(db: asyncpg.Connection) -> None:
    """What the planner must not read of the queue (see test above): a column added to it
    without a statistics target of 0 would be sampled by every ANALYZE."""
    await db.execute("ANALYZE delivery_queue")
    sampled = await db.fetch(
        """SELECT attname FROM pg_attribute WHERE attrelid = 'delivery_queue'::regclass
           AND attnum > 0 AND NOT attisdropped AND attstattarget <> 0"""
    )
    kept = await db.fetchval("SELECT count(*) FROM pg_stats WHERE tablename = 'delivery_queue'")
    assert ([row["attname"] for row in sampled], kept) == ([], 0)


@pytest.mark.parametrize("statistics", STATISTICS)
async def test_a_full_host_costs_the_claim_nothing_however_long_its_backlog(
    queue_fill: asyncpg.Connection, statistics: str
) -> None:
    """The dead host's 99,900 due rows sort first; the claim reads none of them."""
    db = queue_fill
    healthy, dead = await _subscriptions(db)

    async def fill() -> None:
        await _fill(db, dead, "dead.example", ROWS - CLAIM, age=600)
        await _fill(db, healthy, "healthy.example", CLAIM, age=5)

    await _fill_with_statistics(db, statistics, healthy, fill, analyze="ANALYZE delivery_queue")

    plan, claimed = await _explain(db, host_free={"dead.example": 0, "healthy.example": CLAIM})

    assert claimed == CLAIM
    _assert_reads_a_few_pages(plan)


async def test_subscriptions_without_pending_work_cost_the_claim_nothing(
    queue_fill: asyncpg.Connection,
) -> None:
    db = queue_fill
    healthy, _ = await _subscriptions(db)
    await db.execute(
        """
        INSERT INTO subscriptions (id, organization_id, workspace_id, service, event, url,
                                   target_host, signing_key, event_filters, channel_id)
        SELECT gen_random_uuid(), s.organization_id, s.workspace_id, 'channels', 'voice.outbound',
               'https://other' || n || '.example/hook', 'other' || n || '.example', 'v1.x.y',
               '[]', gen_random_uuid()
        FROM subscriptions s, generate_series(1, 100000) AS n WHERE s.id = $1
        """,
        healthy,
    )
    await _fill(db, healthy, "healthy.example", 10_000)
    await db.execute(ANALYZE_ALL)

    plan, claimed = await _explain(db, host_free={})

    assert claimed == 64  # the host's room
    _assert_reads_a_few_pages(plan)


async def test_an_empty_queue_is_claimed_from_in_a_handful_of_pages(
    queue_fill: asyncpg.Connection,
) -> None:
    db = queue_fill
    await db.execute("ANALYZE delivery_queue")
    plan, claimed = await _explain(db, host_free={})
    assert claimed == 0
    assert _pages(plan) < 10


def _array(values: list[object], kind: str) -> str:
    """An array literal for EXPLAIN EXECUTE (the values are the test's own: no quoting)."""
    items = ",".join("NULL" if value is None else f'"{value}"' for value in values)
    return f"'{{{items}}}'::{kind}[]"


def _record_arguments(claimed: list[ClaimedDelivery], outcomes: list[str]) -> str:
    """RECORD_SQL's arguments for `claimed` (of one day), each with its outcome, as the
    recorder gives them."""
    count = len(claimed)
    arrays = [
        _array([d.id for d in claimed], "uuid"),
        _array([d.claim_token for d in claimed], "uuid"),
        _array(outcomes, "text"),
        _array([60.0] * count, "float8"),
        _array([d.subscription_id for d in claimed], "uuid"),
        _array([d.event_id for d in claimed], "uuid"),
        _array([d.event for d in claimed], "text"),
        _array([1] * count, "int"),
        _array([5] * count, "int"),
        _array([200] * count, "int"),
        _array([None] * count, "text"),
        _array(["ok"] * count, "text"),
        _array([datetime.now(UTC).isoformat()] * count, "timestamptz"),
        _array(["succeeded"] * count, "text"),
        _array([None] * count, "jsonb"),
        _array([d.created_at.isoformat() for d in claimed], "timestamptz"),
    ]
    (day,) = {d.created_at.astimezone(UTC).date() for d in claimed}
    bounds = [partitions.day_start(day), partitions.day_start(day + timedelta(days=1))]
    return ", ".join(arrays + [f"'{bound.isoformat()}'::timestamptz" for bound in bounds])


@pytest.mark.parametrize("statistics", [IDLE_AFTER_BUSY, IDLE_AFTER_BUSY_ONES, AFTER_THE_FILL])
async def test_recording_a_batch_reads_a_few_pages_per_attempt_whatever_the_statistics(
    queue_fill: asyncpg.Connection, statistics: str
) -> None:
    """The recorder's statement, for 100 claimed deliveries of a 100k queue: half succeed,
    half are retried."""
    db = queue_fill
    healthy, dead = await _subscriptions(db)
    await _fill_with_statistics(db, statistics, healthy, lambda: _half_and_half(db, healthy, dead))
    claimed = await claim(db, limit=CLAIM, host_free={}, per_host=CLAIM, lease_seconds=30)
    assert len(claimed) == CLAIM
    outcomes = ["succeeded" if n % 2 else "retry" for n in range(CLAIM)]
    plan = await _executed_plan(db, RECORD_SQL, _record_arguments(claimed, outcomes))
    finished = await db.fetchval(
        "SELECT count(*) FROM deliveries WHERE id = ANY($1::uuid[]) AND state = 'succeeded'",
        [d.id for n, d in enumerate(claimed) if n % 2],
    )
    assert finished == CLAIM // 2  # the statement did its work (the test's transaction undoes it)
    _assert_reads_a_few_pages(plan)


def _partitions_read(plan: dict[str, object], table: str) -> set[str]:
    """The partitions of `table` the plan read from (pruned ones, at plan or run time, not)."""
    return {
        str(node["Relation Name"])
        for node in _nodes(plan)
        if str(node.get("Relation Name")).startswith(f"{table}_")
        and int(node.get("Actual Loops", 1)) > 0  # type: ignore[call-overload]
        and (_pages(node) > 0 or node["Node Type"].startswith("Tid"))  # type: ignore[attr-defined]
    }


# Today's partition analyzed (by autovacuum, once it has grown), or not yet: a day's partition
# is new every day, and until autovacuum comes to it the planner knows only its size.
DAY_ANALYZED = "day analyzed"
DAY_NOT_ANALYZED = "day not analyzed yet"


@pytest.mark.parametrize(("batch", "day_rows"), [(10, 20_000), (100, 5_000), (100, 20_000)])
@pytest.mark.parametrize("day_statistics", [DAY_ANALYZED, DAY_NOT_ANALYZED])
@pytest.mark.parametrize("generic", [False, True], ids=["custom plan", "generic plan"])
async def test_recording_a_batch_reads_its_own_day_of_history_alone(
    queue_fill: asyncpg.Connection, batch: int, day_rows: int, day_statistics: str, generic: bool
) -> None:
    """With every day of the retention period partitioned (as a worker keeps them) and a
    day of `day_rows` deliveries, a batch of results probes its own day's partition by
    primary key: the other days are not read, and today's is not read whole (joined by
    value, the planner found reading it whole cheaper than probing every day, and a day
    smaller than a few pages per result cheaper than probing it: 2 ms a batch at 10k rows)."""
    db = queue_fill
    await partitions.ensure_partitions(
        db, partitions.days_to_keep(datetime.now(UTC), RETENTION_DAYS)
    )
    healthy, _ = await _subscriptions(db)
    await _fill(db, healthy, "healthy.example", day_rows)
    if day_statistics == DAY_ANALYZED:
        await db.execute(ANALYZE_ALL)
    claimed = await claim(db, limit=batch, host_free={}, per_host=batch, lease_seconds=30)
    assert len(claimed) == batch
    plan = await _executed_plan(
        db, RECORD_SQL, _record_arguments(claimed, ["succeeded"] * batch), generic=generic
    )
    day = claimed[0].created_at.astimezone(UTC).date()
    assert _partitions_read(plan, "deliveries") == {partitions.partition_name("deliveries", day)}
    assert _whole_table_reads(plan) == []
    # A few pages per result: its history row, its queue row, the attempt and their indexes.
    assert _pages(plan) < 60 * batch, _pages(plan)
    recorded = await db.fetchval(
        "SELECT count(*) FROM deliveries WHERE id = ANY($1::uuid[]) AND state = 'succeeded'",
        [d.id for d in claimed],
    )
    assert recorded == batch


@pytest.mark.parametrize("generic", [False, True], ids=["custom plan", "generic plan"])
async def test_the_claimed_deliveries_history_is_read_from_their_own_days_alone(
    queue_fill: asyncpg.Connection, generic: bool
) -> None:
    """Deliveries and events are in day partitions, every day of the retention period (as a
    worker keeps them): the claim's history lookup reads the days of what it claimed alone
    and probes each table by primary key (no table read whole). In a generic plan too, which
    prunes only as it runs: probing each row by the list of days read every day's index."""
    db = queue_fill
    await partitions.ensure_partitions(
        db, partitions.days_to_keep(datetime.now(UTC), RETENTION_DAYS)
    )
    healthy, dead = await _subscriptions(db)
    await _fill_with_statistics(
        db, AFTER_THE_FILL, healthy, lambda: _half_and_half(db, healthy, dead)
    )
    claimed = await claim(db, limit=CLAIM, host_free={}, per_host=CLAIM, lease_seconds=30)
    assert len(claimed) == CLAIM
    ids = _array([d.id for d in claimed], "uuid")
    days = _array(sorted({d.created_at.isoformat() for d in claimed}), "timestamptz")
    each_day = _array([d.created_at.isoformat() for d in claimed], "timestamptz")
    plan = await _executed_plan(db, HISTORY_SQL, f"{ids}, {days}, {each_day}", generic=generic)
    assert int(plan["Actual Rows"]) == CLAIM  # type: ignore[call-overload]
    day = claimed[0].created_at.astimezone(UTC).date()
    for table in ("deliveries", "events"):
        assert _partitions_read(plan, table) == {partitions.partition_name(table, day)}
    _assert_reads_a_few_pages(plan)
    # Three primary-key probes per row (the subscription's is remembered): a few pages each.
    assert _pages(plan) < 12 * CLAIM, _pages(plan)
